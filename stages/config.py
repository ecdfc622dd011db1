"""The pipeline configuration of one actor: a preset, per-stage overrides and the chosen assets.

It is stored with the actor (``actors/<actor>/config.json``) when a run or a submit starts, so the
local run and every pod build identical stage configs from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from stages.errors import BadInput
from stages.graph import StageDecl

PRESETS = ("full", "tiny", "demo")
PRESET_BASE = {"demo": "tiny"}
"""A preset that starts from another one's values: ``demo`` (the first impression on a 2-core CPU,
``make demo``) is ``tiny`` with a few stages' values changed (a 256 px avatar that looks like the person)."""
CONFIG_FILE = "config.json"


@dataclass
class PipelineConfig:
    """Attributes:
        preset: ``full`` (real quality, GPU), ``tiny`` (minutes on a CPU, for CI) or ``demo`` (tiny with
            a 256 px avatar that looks like the person, within 5 minutes on a 2-core CPU).
        stages: per-stage overrides, ``{"track": {"batch_size": 512}}``; keys are each stage's
            ``Config`` fields.
        assets: the user-supplied files chosen for this actor, ``{kind: sha256}`` (see
            :mod:`stages.assets`). Missing kinds fall back to the built-in stand-ins.
    """

    preset: str = "full"
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    assets: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise BadInput(f"config: unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")

    def stage_config(self, decl: StageDecl) -> Any:
        """The stage's ``Config`` instance: defaults, then the preset's values, then overrides."""
        module = decl.load()
        presets = getattr(module, "PRESETS", {})
        values = dict(presets.get(PRESET_BASE.get(self.preset, ""), {}))
        values.update(presets.get(self.preset, {}))
        values.update(self.stages.get(decl.name, {}))
        known = {f.name for f in dataclasses.fields(module.Config)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BadInput(f"config: stage {decl.name!r} has no setting {', '.join(unknown)}; "
                           f"known settings: {', '.join(sorted(known))}")
        return module.Config(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PipelineConfig":
        return cls(preset=d.get("preset", "full"), stages=dict(d.get("stages", {})), assets=dict(d.get("assets", {})))


def digest_of(obj: Any) -> str:
    """sha256 of an object's canonical JSON form (dataclasses become dicts)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
