"""Argo v4.1.2's own schemas (a copy under tests/workflows/argo_schema/, see its PROVENANCE.md) as a
strict validator: schema.json with its two known quirks fixed, plus the CRDs' openAPIV3Schema enums."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "workflows" / "argo_schema"
CRD_FILES = {"Workflow": "argoproj.io_workflows.yaml", "WorkflowTemplate": "argoproj.io_workflowtemplates.yaml"}
_WIDEN = ("io.k8s.apimachinery.pkg.util.intstr.IntOrString", "io.k8s.apimachinery.pkg.api.resource.Quantity")


@lru_cache(maxsize=1)
def strict_definitions() -> dict[str, Any]:
    """schema.json's definitions with IntOrString/Quantity widened (upstream issue #6060) and
    ``additionalProperties: false`` on every object that lists properties (so typos fail)."""
    defs = copy.deepcopy(json.loads((SCHEMA_DIR / "schema.json").read_text())["definitions"])
    for name in _WIDEN:
        defs[name] = {**{k: v for k, v in defs[name].items() if k != "format"}, "type": ["string", "integer", "number"]}
    for d in defs.values():
        if isinstance(d, dict) and "properties" in d:
            d["additionalProperties"] = False
    return defs


@lru_cache(maxsize=2)
def crd_schema(kind: str) -> dict[str, Any]:
    """The full CRD's openAPIV3Schema of ``kind`` (it carries enums that schema.json lacks)."""
    import yaml

    crd = yaml.load((SCHEMA_DIR / CRD_FILES[kind]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


def argo_errors(doc: dict[str, Any], kind: str | None = None) -> list[str]:
    """Every violation of ``doc`` against ``io.argoproj.workflow.v1alpha1.<kind>`` (strict), and for
    Workflow/WorkflowTemplate also against the CRD. Empty list: valid."""
    import jsonschema

    kind = kind or doc["kind"]
    strict = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}", "definitions": strict_definitions()}
    errors = [f"schema.json {kind}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(strict).iter_errors(doc)]
    if kind in CRD_FILES:
        errors += [f"CRD: {'/'.join(map(str, e.absolute_path))}: {e.message}"
                   for e in jsonschema.Draft7Validator(crd_schema(kind)).iter_errors(doc)]
    return errors
