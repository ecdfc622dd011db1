"""The face model seen as a deforming triangle mesh that carries the Gaussians.

:class:`FaceSurface` wraps any module with the ``stages.face.FLAME`` call signature
(``forward(shape [B,S], expression [B,100], jaw [B,6], eyes [B,12], neck=None, rotation=None,
eyelids [B,2] | None, translation=None)`` returning an object with ``vertices`` [B, V, 3] in metres).
The identity (``shape``) is fixed per actor; head pose stays in the camera extrinsics, so global
rotation, neck and translation stay at identity/zero as in FlashAvatar.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

EXPRESSION_DIM, JAW_DIM, EYES_DIM, EYELIDS_DIM = 100, 6, 12, 2
COND_DIM = EXPRESSION_DIM + JAW_DIM + EYES_DIM + EYELIDS_DIM  # 120
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # first two rows (= columns) of the identity matrix


def condition_vector(expression: Tensor, jaw: Tensor, eyes: Tensor, eyelids: Tensor) -> Tensor:
    """The MLP's per-frame condition: [B,100], [B,6], [B,12], [B,2] -> [B,120] (in that order)."""
    return torch.cat([expression, jaw, eyes, eyelids], dim=-1)


def split_condition(cond: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Inverse of :func:`condition_vector`: [B,120] -> expression, jaw, eyes, eyelids."""
    return torch.split(cond, [EXPRESSION_DIM, JAW_DIM, EYES_DIM, EYELIDS_DIM], dim=-1)


def neutral_condition(batch: int = 1, device: str | torch.device = "cpu") -> Tensor:
    """[batch, 120]: zero expression and eyelids, identity jaw and eye rotations (6D)."""
    cond = torch.zeros(batch, COND_DIM, device=device)
    ident = torch.tensor(IDENTITY_6D, device=device)
    cond[:, EXPRESSION_DIM:EXPRESSION_DIM + JAW_DIM] = ident
    cond[:, EXPRESSION_DIM + JAW_DIM:EXPRESSION_DIM + JAW_DIM + 6] = ident
    cond[:, EXPRESSION_DIM + JAW_DIM + 6:EXPRESSION_DIM + JAW_DIM + 12] = ident
    return cond


class FaceSurface(nn.Module):
    """A face model with a fixed identity, as a mesh per frame.

    Args:
        face_model: module with the ``stages.face.FLAME`` forward signature (no trainable use).
        faces: [F, 3] int vertex indices.
        shape: [S] identity coefficients (FLAME: 300).
        vt: optional [T, 2] UV coordinates; ft: optional [F, 3] UV indices per face.
        face_mask: optional [F] bool, faces allowed to carry Gaussians.
        face_only: the mesh covers only the face (no scalp, ears or neck: the built-in stand-in),
            so the avatar adds shell Gaussians beyond it (:mod:`stages.gauss.shell`).
        masks: optional region name -> vertex indices (the face model's masks; the trainer finds
            the eye region there, :func:`stages.gauss.eye_region.eye_region_gaussians`).
    """

    def __init__(self, face_model: nn.Module, faces: Tensor, shape: Tensor, vt: Tensor | None = None,
                 ft: Tensor | None = None, face_mask: Tensor | None = None, face_only: bool = False,
                 masks: dict | None = None):
        super().__init__()
        self.face_only = face_only
        self.masks = dict(masks or {})
        self.face_mask = None if face_mask is None else torch.as_tensor(face_mask).bool()
        self.face_model = face_model
        self.register_buffer("faces", torch.as_tensor(faces).long(), persistent=False)
        self.register_buffer("shape", torch.as_tensor(shape).float().reshape(-1), persistent=False)
        self.vt = None if vt is None else torch.as_tensor(vt).float()
        self.ft = None if ft is None else torch.as_tensor(ft).long()

    @property
    def has_uv(self) -> bool:
        return self.vt is not None and self.ft is not None

    @torch.no_grad()
    def vertices(self, cond: Tensor) -> Tensor:
        """Mesh vertices per frame. cond [B, 120] (see :func:`condition_vector`) -> [B, V, 3] metres."""
        expression, jaw, eyes, eyelids = split_condition(cond.float())
        n_shape = getattr(self.face_model, "n_shape", None)
        n_exp = getattr(self.face_model, "n_expression", None)
        shape = self.shape.to(cond.device)[:n_shape].expand(cond.shape[0], -1)
        expression = expression[:, :n_exp]
        out = self.face_model(shape, expression, jaw, eyes, eyelids=eyelids)
        return out.vertices if hasattr(out, "vertices") else out

    def neutral(self) -> Tensor:
        """[V, 3] the identity's mesh at the neutral condition (canonical space of the Gaussians)."""
        return self.vertices(neutral_condition(1, self.shape.device))[0]


def flame_surface(data, shape) -> FaceSurface:
    """A :class:`FaceSurface` over ``stages.face.FLAME`` built from a ``FaceModelData``.

    Shape and expression coefficients beyond the model's are dropped (a stand-in model may have
    fewer than 300/100). Faces whose three vertices all lie in the model's ``boundary`` mask region
    (when it has one) carry no Gaussians, as in FlashAvatar. The built-in stand-in (a face-only
    mesh, ``data.name`` ``standin-*``) is marked ``face_only``.
    """
    import numpy as np

    from stages.face.flame import FLAME

    faces = torch.as_tensor(np.asarray(data.faces, dtype=np.int64))
    face_mask = None
    boundary = (data.masks or {}).get("boundary")
    if boundary is not None and len(boundary):
        in_b = torch.zeros(data.n_vertices, dtype=torch.bool)
        in_b[torch.as_tensor(np.asarray(boundary, dtype=np.int64))] = True
        face_mask = ~in_b[faces].all(-1)
    vt = None if data.vt is None else torch.as_tensor(np.asarray(data.vt, np.float32))
    ft = None if data.ft is None else torch.as_tensor(np.asarray(data.ft, np.int64))
    return FaceSurface(FLAME(data), faces, torch.as_tensor(np.asarray(shape, np.float32)), vt, ft, face_mask,
                       face_only=str(getattr(data, "name", "")).startswith("standin"), masks=data.masks)
