"""Load the face model a tracker stage uses: the user's FLAME assets, or the built-in stand-in."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stages.errors import bad_input

FACE_ASSETS = ("flame", "flame-masks", "mediapipe-embedding", "landmark-embedding", "flame-texture")
"""Asset kinds calibrate, track and assemble may read (the stage modules' ``ASSETS``)."""


def load_stage_face_model(ctx: Any):  # noqa: ANN201 - FaceModelData
    """The :class:`stages.face.model.FaceModelData` for this actor.

    With a ``flame`` asset, its companions (masks, MediaPipe embedding, 68-point embedding,
    texture/UV) come from the actor's assets too; without one, the stand-in model is used.

    Raises:
        BadInput: a FLAME model without a MediaPipe embedding (the tracker fits MediaPipe points).
    """
    from stages.face.model import load_face_model

    flame = ctx.asset("flame")
    data = load_face_model(flame, masks=ctx.asset("flame-masks"), mediapipe_embedding=ctx.asset("mediapipe-embedding"),
                           landmark_embedding=ctx.asset("landmark-embedding"),
                           uv=ctx.asset("flame-texture") if flame is not None else None)
    if data.mp_index is None or len(data.mp_index) == 0:
        raise bad_input(flame, "the face model has no MediaPipe landmark embedding, which the tracker fits",
                        "add one: avatar assets add mediapipe-embedding mediapipe_landmark_embedding.npz "
                        "and choose it for the actor")
    return data


def face_region(data: Any) -> np.ndarray:
    """bool [F]: triangles whose three vertices are all in the model's ``face`` mask (every triangle
    when the model has no such mask); eyeballs are left out where the masks name them."""
    faces = np.asarray(data.faces)
    masks = getattr(data, "masks", {}) or {}
    keep = np.zeros(data.n_vertices, dtype=bool)
    if "face" in masks and len(masks["face"]):
        keep[np.asarray(masks["face"], np.int64)] = True
    else:
        keep[:] = True
    for name in ("left_eyeball", "right_eyeball"):
        if name in masks:
            keep[np.asarray(masks[name], np.int64)] = False
    return keep[faces].all(axis=1)


def build_model(data: Any, device: str | torch.device) -> torch.nn.Module:
    """``stages.face.flame.FLAME(data)`` on ``device`` (float32, eval mode, no parameter gradients)."""
    from stages.face.flame import FLAME

    model = FLAME(data).to(device)
    model.eval()
    return model
