"""Fixtures of the chart tests. Argo v4.1.2 validation of the chart's Argo objects, reusing the schema files in
tests/workflows/argo_schema/ (see PROVENANCE.md there), with the quirk fixes of
/work/shared/argo/README.md applied in memory: IntOrString and Quantity widened to string, integer or
number; every object definition that lists properties closed with additionalProperties: false."""

from __future__ import annotations

import pytest

from factories.argo_schema import SCHEMA_DIR, argo_errors


@pytest.fixture(scope="session")
def argo_validate():
    """``argo_validate(doc, definition) -> list of errors`` (empty = valid)."""
    assert (SCHEMA_DIR / "schema.json").is_file(), f"Argo schema files missing from {SCHEMA_DIR}"
    return argo_errors
