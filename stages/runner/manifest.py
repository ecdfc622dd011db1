"""Manifests: the last thing a stage (or a shard) writes, and the proof that it finished.

A manifest records the digests of the stage's inputs and config, the code version, and the
sha256 of every output. A stage whose manifest matches its current inputs and config is skipped;
a pod killed half-way leaves no manifest, so nothing half-written is trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import stages

MANIFEST = "manifest.json"


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+<git commit>`` (the commit from ``$AVATAR_CODE_VERSION`` in images,
    from git in a checkout, absent otherwise)."""
    env = os.environ.get("AVATAR_CODE_VERSION")
    if env:
        return f"{stages.__version__}+{env}"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(stages.__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{stages.__version__}+{sha}" if sha else stages.__version__


@dataclass
class Manifest:
    """Attributes:
        stage: stage name.
        actor: actor name.
        inputs: ``{name: digest}`` of everything read (upstream stages' output digests, the video,
            assets).
        config_digest: sha256 of the stage config's canonical JSON.
        config: the config itself: for people reading the manifest, and to compare it field by field
            with a config that gained fields since (:mod:`stages.config_match`).
        outputs: ``{key: sha256}`` of every object written, keys relative to the store root.
        shard: the shard index for a shard manifest, ``None`` for the stage manifest.
        code_version: the code that wrote it (recorded, not compared).
        stats: free-form numbers (frames, seconds, frames_per_s).
    """

    stage: str
    actor: str
    inputs: dict[str, str]
    config_digest: str
    config: dict[str, Any]
    outputs: dict[str, str] = field(default_factory=dict)
    shard: int | None = None
    code_version: str = field(default_factory=code_version)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs_digest(self) -> str:
        """One digest over all outputs: what downstream stages record as this stage's input."""
        return hashlib.sha256(json.dumps(sorted(self.outputs.items())).encode()).hexdigest()

    def matches(self, inputs: dict[str, str], config: Any) -> bool:
        """Whether this manifest was written for these inputs and this config.

        ``config`` is the current ``Config`` dataclass instance: the recorded config holds for it by
        :mod:`stages.config_match`'s rule (equal digests, or equal values with fields the record lacks
        at their defaults). A digest string instead compares digests only."""
        return self.inputs == inputs and self.config_holds(config)

    def config_holds(self, config: Any) -> bool:
        """Whether the recorded config holds for ``config`` (a ``Config`` instance or a digest)."""
        if isinstance(config, str):
            return self.config_digest == config
        from stages.config_match import config_holds

        return config_holds(self.config, self.config_digest, config)

    def mismatch(self, inputs: dict[str, str], config: Any) -> str:
        """What differs from these inputs and this config, in a few words for a message
        (``""`` when the manifest matches)."""
        from stages.config_match import config_changes, describe_changes

        parts = []
        changed = sorted(k for k in set(self.inputs) | set(inputs) if self.inputs.get(k) != inputs.get(k))
        if changed:
            parts.append("inputs " + ", ".join(changed))
        if isinstance(config, str):
            if config != self.config_digest:
                parts.append("another config")
        else:
            changes = config_changes(self.config, self.config_digest, config)
            if changes != []:
                parts.append("settings " + describe_changes(changes) if changes else "another config")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "actor": self.actor, "shard": self.shard, "inputs": self.inputs,
                "config_digest": self.config_digest, "config": self.config, "outputs": self.outputs,
                "outputs_digest": self.outputs_digest, "code_version": self.code_version, "stats": self.stats}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        return cls(stage=d["stage"], actor=d["actor"], inputs=d["inputs"], config_digest=d["config_digest"],
                   config=d.get("config", {}), outputs=d.get("outputs", {}), shard=d.get("shard"),
                   code_version=d.get("code_version", ""), stats=d.get("stats", {}))
