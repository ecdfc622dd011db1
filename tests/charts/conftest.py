"""Fixtures of the chart tests. Argo v4.1.2 validation of the chart's Argo objects, reusing the schema files in
tests/workflows/argo_schema/ (see PROVENANCE.md there), with the quirk fixes of
/work/shared/argo/README.md applied in memory: IntOrString and Quantity widened to string, integer or
number; every object definition that lists properties closed with additionalProperties: false."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "workflows" / "argo_schema"
_WIDEN = ("io.k8s.apimachinery.pkg.util.intstr.IntOrString", "io.k8s.apimachinery.pkg.api.resource.Quantity")
_CRDS = {"Workflow": "argoproj.io_workflows.yaml", "WorkflowTemplate": "argoproj.io_workflowtemplates.yaml"}


@lru_cache(maxsize=1)
def _definitions() -> dict[str, Any]:
    defs = copy.deepcopy(json.loads((SCHEMA_DIR / "schema.json").read_text())["definitions"])
    for name in _WIDEN:
        defs[name] = {**{k: v for k, v in defs[name].items() if k != "format"}, "type": ["string", "integer", "number"]}
    for d in defs.values():
        if isinstance(d, dict) and "properties" in d:
            d["additionalProperties"] = False
    return defs


@lru_cache(maxsize=2)
def _crd(kind: str) -> dict[str, Any]:
    import yaml

    crd = yaml.load((SCHEMA_DIR / _CRDS[kind]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


def argo_errors(doc: dict[str, Any], definition: str) -> list[str]:
    """Violations of ``doc`` against ``io.argoproj.workflow.v1alpha1.<definition>`` (strict), and for
    Workflow/WorkflowTemplate also against the CRD's openAPIV3Schema (its enums). Empty = valid."""
    import jsonschema

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{definition}", "definitions": _definitions()}
    errors = [f"schema.json {definition}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    if definition in _CRDS:
        errors += [f"CRD: {'/'.join(map(str, e.absolute_path))}: {e.message}"
                   for e in jsonschema.Draft7Validator(_crd(definition)).iter_errors(doc)]
    return errors


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def argo_validate():
    """``argo_validate(doc, definition) -> list of errors`` (empty = valid)."""
    if not (SCHEMA_DIR / "schema.json").is_file():
        pytest.skip(f"Argo schema files not found in {SCHEMA_DIR}")
    return argo_errors
