"""An actor's trained avatar, face model and tracked sequence, read from a store (local or S3).

Everything is fetched through the stage manifests (verified by sha256), as the stages do; nothing is
written to the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stages.errors import bad_input
from stages.gauss.data import TrackedSequence
from stages.gauss.model import GaussianAvatar
from stages.gauss.surface import FaceSurface
from stages.store.base import Store


@dataclass
class ActorAvatar:
    """Attributes:
        actor: the actor's name.  model: the trained avatar (CPU).  meta: the avatar file's dict.
        surface: the face model with the actor's identity.  seq: the tracked sequence (None when not
        asked for).  face_model: ``{"kind": "flame" | "standin", "name", "sha256"}`` of the face model
        file the avatar was trained on.  avatar_sha256: of ``avatar.pt``.  avatar_path: its local copy.
    """

    actor: str
    model: GaussianAvatar
    meta: dict
    surface: FaceSurface
    seq: TrackedSequence | None
    face_model: dict = field(default_factory=dict)
    avatar_sha256: str = ""
    avatar_path: Path | None = None


def load_actor(store: Store, actor: str, cache_dir: str | Path, tracking: bool = True) -> ActorAvatar:
    """Fetch the actor's ``avatar/avatar.pt`` (train stage), its ``flame`` asset (or the stand-in)
    and, with ``tracking``, the dataset's ``.frame`` files (assemble stage).

    Raises BadInput (naming the store key and the command to run) when the actor has no trained avatar."""
    from stages.assets import asset_path
    from stages.dataset.layout import DatasetLayout
    from stages.face.model import load_face_model
    from stages.gauss.surface import flame_surface
    from stages.gauss.trainer import check_face_model, load_avatar
    from stages.runner.context import actor_key
    from stages.runner.run import load_pipeline_config, stage_finished
    from stages.store.base import sha256_file

    cache = Path(cache_dir)
    manifest = stage_finished(store, actor, "train")
    if manifest is None:
        raise bad_input(f"{store.uri}/{actor_key(actor, 'train', 'manifest.json')}",
                        f"actor {actor!r} has no trained avatar in this store",
                        f"train it first (avatar run --actor {actor} --video VIDEO --store {store.uri}) or check --store")
    key = actor_key(actor, "avatar", "avatar.pt")
    sha = manifest.outputs.get(key)
    if sha is None:
        raise bad_input(f"{store.uri}/{key}", "not among the train stage's outputs", f"re-run training for {actor}")
    path = store.fetch(key, cache / "avatar", sha)
    try:
        model, meta = load_avatar(path)
    except (ValueError, RuntimeError, OSError) as e:
        raise bad_input(f"{store.uri}/{key}", f"not an avatar file ({e})", f"re-run training for {actor}") from None
    flame_sha = load_pipeline_config(store, actor).assets.get("flame")
    if flame_sha is not None:
        flame_path = asset_path(store, "flame", flame_sha, cache / "assets")
        data = load_face_model(flame_path)
        face_model = {"kind": "flame", "name": data.name, "sha256": flame_sha}
    else:
        from stages.face.standin import standin_paths

        data = load_face_model(None)
        face_model = {"kind": "standin", "name": data.name, "sha256": sha256_file(standin_paths()["flame"])}
    surface = flame_surface(data, meta["shape"].numpy())
    check_face_model(meta, surface, f"{store.uri}/{key}")
    seq = None
    if tracking:
        done = stage_finished(store, actor, "assemble")
        if done is None:
            raise bad_input(f"{store.uri}/{actor_key(actor, 'assemble', 'manifest.json')}",
                            f"actor {actor!r} has no tracked sequence", "run the pipeline up to assemble first")
        prefix = actor_key(actor, "dataset", "checkpoint") + "/"
        keys = sorted(k for k in done.outputs if k.startswith(prefix) and k.endswith(".frame"))
        if not keys:
            raise bad_input(f"{store.uri}/{prefix}", "no .frame files", "re-run the assemble stage")
        paths = [store.fetch(k, cache / "tracking", done.outputs[k]) for k in keys]
        folder = paths[0].parent
        seq = TrackedSequence.load(DatasetLayout(folder.parent, folder))
    return ActorAvatar(actor=actor, model=model.eval(), meta=meta, surface=surface, seq=seq, face_model=face_model,
                       avatar_sha256=sha, avatar_path=path)


def drive_motion(store: Store, actor: str, name: str, cache_dir: str | Path) -> Path:
    """Local copy of a drive's transferred motion, ``actors/<actor>/drive/<name>/motion.npz``
    (written by ``avatar drive``); BadInput when the store has none."""
    from stages.runner.context import actor_key

    key = actor_key(actor, "drive", name, "motion.npz")
    try:
        return store.fetch(key, Path(cache_dir) / "drive")
    except KeyError:
        raise bad_input(f"{store.uri}/{key}", f"actor {actor!r} has no drive named {name!r}",
                        "run avatar drive for it first, or give --motion FILE") from None
