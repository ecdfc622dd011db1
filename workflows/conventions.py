"""What the WorkflowTemplate builder (:mod:`workflows.build`) and its Helm form
(:mod:`workflows.helm`) agree on: the actor parameter, our label keys, the final artifacts, and the
deterministic YAML dump. Both import it; neither imports the other's internals (build -> helm ->
conventions, no cycle)."""

from __future__ import annotations

import copy
from typing import Any

from workflows.settings import WorkflowSettings

ACTOR = "actor"
ACTOR_REF = "{{workflow.parameters.actor}}"

# Final outputs shown in the Argo UI: (artifact name, path under OUTPUTS_DIR, archived as tgz?).
FINAL_ARTIFACTS = (("avatar", "avatar", True), ("preview", "preview.mp4", False), ("report", "report", True))


def label(settings: WorkflowSettings, what: str) -> str:
    """A label key of ours, e.g. ``avatar-pipeline/actor``."""
    return f"{settings.label_prefix}/{what}"


def dump_yaml(doc: dict[str, Any]) -> str:
    """Deterministic YAML (keys in build order, block style, no line wrapping)."""
    import yaml

    return yaml.safe_dump(copy.deepcopy(doc), sort_keys=False, default_flow_style=False, width=1 << 16,
                          allow_unicode=True)
