"""A refused command changes nothing: what it wrote is taken back when it ends in bad input.

``with refused_leaves_no_trace(store, actor):`` lists the actor's keys and the assets before the
block; if the block raises :class:`~stages.errors.BadInput` (a video with no face found at ingest, a
bad asset found by the stage that reads it), the keys it created go again and ``config.json`` gets
its old bytes back — unless a stage finished in the block: finished work (each manifest and what it
lists) and the setup it ran with stay, and only the unfinished stage's partial outputs go.
Transient faults, Ctrl-C and kills keep everything (a rerun resumes from it).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from stages.config import CONFIG_FILE
from stages.errors import BadInput
from stages.graph import BY_NAME
from stages.runner.context import actor_key
from stages.runner.manifest import MANIFEST
from stages.store.base import Store

log = logging.getLogger("avatar.undo")


def _keys(store: Store, actor: str) -> set[str]:
    return set(store.list(actor_key(actor) + "/")) | set(store.list("assets/"))


@contextmanager
def refused_leaves_no_trace(store: Store, actor: str) -> Iterator[None]:
    """Take back the block's writes if it raises BadInput (see the module's docstring)."""
    before = _keys(store, actor)
    config_key = actor_key(actor, CONFIG_FILE)
    try:
        old_config = store.get_bytes(config_key)
    except KeyError:
        old_config = None
    try:
        yield
    except BadInput:
        try:
            _take_back(store, actor, before, config_key, old_config)
        except Exception as e:  # noqa: BLE001 - the user's error is the one to report
            log.warning("could not take back this command's writes: %s", e)
        raise


def _take_back(store: Store, actor: str, before: set[str], config_key: str, old_config: bytes | None) -> None:
    new = sorted(_keys(store, actor) - before)
    if not new:
        return
    stage_manifests = {actor_key(actor, name, MANIFEST) for name in BY_NAME}
    finished_here = [k for k in new if k in stage_manifests]
    keep: set[str] = set()
    if finished_here:  # finished work stays, with the video, assets and config it ran with
        keep |= {k for k in new if k == config_key or k == actor_key(actor, "input", "video.mp4")
                 or k.startswith("assets/")}
        for k in new:
            if k.endswith(MANIFEST) or k.endswith(".manifest.json"):
                try:
                    keep |= {k, *store.get_json(k).get("outputs", {})}
                except (KeyError, ValueError, AttributeError):
                    pass
    gone = [k for k in new if k not in keep]
    for k in gone:
        store.delete(k)
    if not finished_here:
        if old_config is not None:
            store.put_bytes(config_key, old_config)
    _prune_empty_folders(store, gone)
    log.info("refused: took back %d object(s) this command wrote", len(gone))


def _prune_empty_folders(store: Store, keys: list[str]) -> None:
    root = getattr(store, "root", None)
    if root is None:
        return
    root = Path(root)
    for folder in sorted({(root / k).parent for k in keys}, key=lambda p: -len(p.parts)):
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent
