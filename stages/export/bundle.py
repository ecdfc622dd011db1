"""The rigged avatar bundle, format ``avatar-bundle/3`` for avatars whose Gaussians live in their
triangle's frame, ``/2`` for triangle scaling, ``/1`` for neither (docs/export-format.md).

A folder that holds everything needed to animate the avatar outside this project, in plain NumPy
files (no pickles, no torch): the Gaussians bound to the face-model mesh (face index + barycentric
coordinates), their appearance, the deformation MLP's weights, the identity coefficients, a
reference to the face model by sha256 (the licensed FLAME file itself is never included), the
tracked sequence, and a neutral-face 3DGS PLY to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from stages.export.actor import ActorAvatar
from stages.export.motion import tracked_motion
from stages.motion.format import motion_bytes
from stages.export.ply import splat_cloud, write_ply
from stages.export.pose import pose_gaussians
from stages.gauss.model import GaussianAvatar, avatar_config_from_dict
from stages.gauss.surface import neutral_condition

BUNDLE_FORMAT = "avatar-bundle/2"
"""Version 2: Gaussians scale with their triangle (``canonical_size`` in ``gaussians.npz``, step 5 of the
posing in docs/export-format.md); an avatar trained without that is still written as version 1."""
BUNDLE_FORMAT_V1 = "avatar-bundle/1"
BUNDLE_FORMAT_V3 = "avatar-bundle/3"
"""Version 3: Gaussians live in their triangle's frame (``canonical_basis`` and ``frame_mask`` in
``gaussians.npz``, step 5 of the posing in docs/export-format.md)."""
GAUSSIAN_KEYS = ("face_idx", "bary", "canonical", "pe_center", "pe_halfsize", "opacity_logit", "log_scale", "quat")
TRIANGLE_KEYS = ("canonical_size",)  # only where avatar_config.triangle_scale
FRAME_KEYS = ("canonical_basis", "frame_mask")  # only where avatar_config.triangle_frame


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def write_bundle(out: str | Path, a: ActorAvatar) -> Path:
    """Write the bundle folder ``out`` (atomically: built beside it, then renamed; ``out`` must not exist).

    Returns ``out``."""
    from stages.store.base import sha256_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part"))
    try:
        sd = {k: v.detach().cpu() for k, v in a.model.state_dict().items()}
        scaled, framed = a.model.config.triangle_scale, a.model.config.triangle_frame
        g = {k: sd[k].numpy() for k in GAUSSIAN_KEYS + (TRIANGLE_KEYS if scaled else ()) + (FRAME_KEYS if framed else ())}
        if bool(sd["anchor_offset"].any()):  # shell Gaussians (stages.gauss.shell); absent: all zero
            g["anchor_offset"] = sd["anchor_offset"].numpy()
        if "pose_ref" in sd:  # an avatar whose MLP sees the head rotation (avatar_config.pose_dim)
            g["pose_ref"] = sd["pose_ref"].numpy()
        g["sh"] = torch.cat([sd["sh_dc"], sd["sh_rest"]], 1).numpy()
        _savez(tmp / "gaussians.npz", g)
        _savez(tmp / "mlp.npz", {k[len("mlp."):]: v.numpy() for k, v in sd.items() if k.startswith("mlp.")})
        np.save(tmp / "identity.npy", np.asarray(a.meta["shape"], np.float32).reshape(-1))
        neutral = pose_gaussians(a.model, a.surface, neutral_condition(1))
        write_ply(tmp / "neutral.ply", splat_cloud(neutral))
        if a.seq is not None:
            m = tracked_motion(a.seq)
            (tmp / "tracked.npz").write_bytes(motion_bytes(m))  # our motion.npz: avatar drive --motion reads it
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        doc = {
            "format": BUNDLE_FORMAT_V3 if framed else BUNDLE_FORMAT if scaled else BUNDLE_FORMAT_V1, "actor": a.actor,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "avatar_sha256": a.avatar_sha256, "face_model": a.face_model,
            "num_vertices": int(a.meta["num_vertices"]), "num_faces": int(a.meta["num_faces"]),
            "num_gaussians": int(a.model.num_gaussians), "avatar_config": asdict(a.model.config),
            "train_steps": a.meta.get("steps"), "files": files,
        }
        (tmp / "bundle.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        os.rename(tmp, out)  # fails if out appeared meanwhile: never overwrite
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_bundle(path: str | Path) -> tuple[GaussianAvatar, dict]:
    """Rebuild the :class:`GaussianAvatar` from a bundle (files verified by sha256).

    Returns (model on CPU, the ``bundle.json`` dict). ValueError on a wrong format or digest."""
    from stages.store.base import sha256_file

    path = Path(path)
    doc = json.loads((path / "bundle.json").read_text())
    if doc.get("format") not in (BUNDLE_FORMAT_V3, BUNDLE_FORMAT, BUNDLE_FORMAT_V1):
        raise ValueError(f"{path}: format {doc.get('format')!r}, expected {BUNDLE_FORMAT_V3!r}, {BUNDLE_FORMAT!r} "
                         f"or {BUNDLE_FORMAT_V1!r}")
    for name, sha in doc["files"].items():
        if sha256_file(path / name) != sha:
            raise ValueError(f"{path / name}: sha256 differs from bundle.json; the bundle is corrupt")
    with np.load(path / "gaussians.npz") as z:
        g = {k: torch.from_numpy(z[k]) for k in z.files}
    with np.load(path / "mlp.npz") as z:
        mlp = {f"mlp.{k}": torch.from_numpy(z[k]) for k in z.files}
    config = avatar_config_from_dict(doc["avatar_config"])
    keys = (GAUSSIAN_KEYS + (TRIANGLE_KEYS if config.triangle_scale else ())
            + (FRAME_KEYS if config.triangle_frame else ()))
    model = GaussianAvatar(g["face_idx"], g["bary"], g["canonical"], config, canonical_size=g.get("canonical_size"),
                           canonical_basis=g.get("canonical_basis"), frame_mask=g.get("frame_mask"))
    sd = {k: g[k] for k in keys + ("anchor_offset", "pose_ref") if k in g}
    sd["sh_dc"], sd["sh_rest"] = g["sh"][:, :1].contiguous(), g["sh"][:, 1:].contiguous()
    model.load_state_dict({**sd, **mlp})
    return model.eval(), doc
