"""What Ctrl-C says: which stages finished, which shards of the next one are kept, and the command
that resumes (the same one: finished work is skipped).

Stages call :func:`note` with the store and actor they work on; the CLI calls :func:`summary`
when interrupted.
"""

from __future__ import annotations

import shlex
from typing import Any

_last: dict[str, Any] = {}


def note(store: Any, actor: str) -> None:
    """Remember the store and actor being worked on (for :func:`summary`)."""
    _last["store"], _last["actor"] = store, actor


def forget() -> None:
    _last.clear()


def summary(argv: list[str]) -> str:
    """One line: ``interrupted; finished: ingest, landmarks; masks: 3 of 5 shards kept; resume with: avatar ...``."""
    resume = shlex.join(["avatar", *argv])
    store, actor = _last.get("store"), _last.get("actor")
    if store is None:
        return f"interrupted; resume with: {resume}"
    try:
        from stages.graph import BY_NAME
        from stages.runner.context import actor_key
        from stages.runner.manifest import MANIFEST

        done, partial = [], ""
        for decl in BY_NAME.values():  # stages overlap (stages.runner.schedule): look at every one
            if store.exists(actor_key(actor, decl.name, MANIFEST)):
                done.append(decl.name)
                continue
            if decl.fan_out:
                kept = [k for k in store.list(actor_key(actor, decl.name, "shards") + "/")
                        if k.endswith(".manifest.json")]
                if kept:
                    partial += f"; {decl.name}: {len(kept)} shard(s) kept"
    except Exception:  # noqa: BLE001 - the store may be what failed; say what we can
        return f"interrupted; resume with: {resume}"
    return (f"interrupted; actor {actor!r} finished: {', '.join(done) or 'nothing yet'}{partial}; "
            f"resume with: {resume}")
