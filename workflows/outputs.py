"""What a pod hands back to Argo besides its exit code: the shard list (an output parameter that
fan-out tasks iterate over) and the final avatar, preview and report (output artifacts shown in
the Argo UI). Both are read from the store through the stages' manifests, so a skipped
(already finished) stage yields the same outputs as a fresh run.
"""

from __future__ import annotations

import json
from pathlib import Path

from stages.errors import bad_input
from stages.runner.context import actor_key
from stages.runner.manifest import MANIFEST, Manifest
from stages.runner.shards import SHARDS_FILE, shards_from_document
from stages.store.base import Store

AVATAR_STAGE = "train"     # the avatar = every output of this stage (checkpoint, its config)
PREVIEW_STAGE = "render"   # the preview = this stage's video output; the report = its other outputs
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov")


def _manifest(store: Store, actor: str, stage: str) -> Manifest:
    key = actor_key(actor, stage, MANIFEST)
    try:
        return Manifest.from_dict(store.get_json(key))
    except KeyError:
        raise bad_input(f"{store.uri}/{key}", f"stage {stage!r} has not finished for actor {actor!r}",
                        f"run it first (avatar stage {stage} --actor {actor} --store {store.uri})") from None


def shard_indices(store: Store, actor: str, source: str = "ingest") -> list[int]:
    """Indices of the shards the ``source`` stage planned, from its verified ``shards.json``."""
    m = _manifest(store, actor, source)
    key = actor_key(actor, source, SHARDS_FILE)
    if key not in m.outputs:
        raise bad_input(f"{store.uri}/{key}", f"not among the outputs of stage {source!r}",
                        f"re-run {source} for actor {actor!r}")
    doc = json.loads(store.get_bytes(key, expect_sha256=m.outputs[key]))
    return [s.index for s in shards_from_document(doc)]


def write_shard_list(store: Store, actor: str, out: Path) -> list[int]:
    """Write the JSON list of shard indices to ``out`` (Argo's ``valueFrom.path``)."""
    indices = shard_indices(store, actor)
    if not indices:
        raise bad_input(f"{store.uri}/{actor_key(actor, 'ingest', SHARDS_FILE)}", "ingest planned no shards",
                        "check the input video has frames with a face")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(indices))
    return indices


def _rel(actor: str, key: str) -> str:
    """A stage output's path below its folder: ``actors/<actor>/<folder>/<rel>`` -> ``<rel>`` (a
    stage may write into its own folder or another, e.g. ``avatar/``)."""
    base = actor_key(actor) + "/"
    parts = key[len(base):].split("/", 1) if key.startswith(base) else []
    return parts[1] if len(parts) == 2 else Path(key).name


def _fetch(store: Store, key: str, digest: str, dest: Path) -> Path:
    return store.get_file(key, dest, expect_sha256=digest)


def collect_outputs(store: Store, actor: str, out: Path) -> dict[str, list[str]]:
    """Download the final outputs for Argo to publish.

    Layout under ``out``: ``avatar/`` (every output of ``train``, paths below the folder it wrote),
    ``preview.mp4`` (``render``'s video; the one named ``preview.*`` if several) and ``report/``
    (``render``'s other outputs). Returns ``{"avatar": [...], "preview": [...], "report": [...]}``
    of store keys.
    """
    got: dict[str, list[str]] = {"avatar": [], "preview": [], "report": []}
    train = _manifest(store, actor, AVATAR_STAGE)
    for key, digest in sorted(train.outputs.items()):
        _fetch(store, key, digest, out / "avatar" / _rel(actor, key))
        got["avatar"].append(key)
    render = _manifest(store, actor, PREVIEW_STAGE)
    videos = sorted(k for k in render.outputs if k.lower().endswith(VIDEO_SUFFIXES))
    if not videos:
        raise bad_input(f"{store.uri}/{actor_key(actor, PREVIEW_STAGE, MANIFEST)}", "the render stage wrote no video",
                        "re-run render; its manifest lists no preview video")
    preview = next((k for k in videos if Path(k).name.startswith("preview")), videos[0])
    _fetch(store, preview, render.outputs[preview], out / "preview.mp4")
    got["preview"].append(preview)
    for key, digest in sorted(render.outputs.items()):
        if key in videos:
            continue
        _fetch(store, key, digest, out / "report" / _rel(actor, key))
        got["report"].append(key)
    if not got["report"]:  # Argo fails on a missing artifact path: keep the folder, say why it is empty
        (out / "report").mkdir(parents=True, exist_ok=True)
        (out / "report" / "README.txt").write_text("the render stage wrote no report files\n")
    return got

