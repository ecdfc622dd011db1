"""FLAME as a batched, differentiable ``torch.nn.Module`` (smplx style), plus a float64 reference.

Model (Li et al. 2017, with metrical-tracker's 6D rotations and eyelid blendshapes):

1. ``v_shaped = v_template + shapedirs @ shape + exprdirs @ expression``
2. ``J = J_regressor @ v_shaped`` (joints of the shaped mesh)
3. ``R_j = rotation_6d_to_matrix(pose_j)`` for joints ``[global, neck, jaw, left eye, right eye]``
   (6D = first two rows, PyTorch3D's convention, see :mod:`stages.face.rotation`)
4. ``v_posed = v_shaped + posedirs^T @ vec(R_1..R_{J-1} - I)`` (pose correctives)
5. linear blend skinning: ``v = sum_j w_vj (G_j v_posed + g_j)`` with ``G_j, g_j`` the world
   transform of joint ``j`` relative to its rest position
6. ``v += eyelids[:,0] * eyelid_left + eyelids[:,1] * eyelid_right`` (after skinning, as
   metrical-tracker does), then ``+ translation``.

Landmarks are barycentric combinations of the final vertices (MediaPipe embedding and the static
68-point embedding). Head pose is not a FLAME parameter in this pipeline: it lives in the camera
extrinsics, so ``rotation`` and ``neck`` default to identity.

Eye order: ``eyes[:, :6]`` rotates joint 3 and ``eyes[:, 6:]`` joint 4, in the order
metrical-tracker concatenates them (``.frame`` files are interchangeable). In FLAME's joint order
joint 3 is the left eye and joint 4 the right eye; the project notes call ``eyes`` "right 6D,
left 6D", which names the same two slices the other way round. The stand-in model follows
FLAME's joint order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from stages.face.model import FaceModelData
from stages.face.rotation import identity_6d, rotation_6d_to_matrix


@dataclass
class FlameOutput:
    """Result of :meth:`FLAME.forward` (``B`` frames, metres, model/world space).

    Attributes:
        vertices: ``[B,V,3]``.
        landmarks_mp: ``[B,L,3]`` MediaPipe landmarks in the embedding's order
            (``FLAME.mp_index`` says which of MediaPipe's 478 each is); ``L = 0`` without one.
        landmarks_68: ``[B,68,3]`` iBUG 68 points (static contour); ``[B,0,3]`` without one.
        joints: ``[B,J,3]`` posed joint positions.
    """

    vertices: Tensor
    landmarks_mp: Tensor
    landmarks_68: Tensor
    joints: Tensor


def _as_buffer(x: np.ndarray | None, dtype: torch.dtype) -> Tensor | None:
    return None if x is None else torch.as_tensor(np.ascontiguousarray(x)).to(dtype)


class FLAME(nn.Module):
    """FLAME head model with buffers from a :class:`FaceModelData`.

    Buffers (``dtype``, float32 by default; cast with ``.double()`` etc.): ``v_template [V,3]``, ``shapedirs [V*3,S]``,
    ``exprdirs [V*3,E]``, ``posedirs [(J-1)*9, V*3]``, ``J_regressor [J,V]``,
    ``lbs_weights [V,J]``, ``eyelid_dirs [2,V*3]`` (zeros if the model has none), ``faces [F,3]``
    (long), ``mp_vert_idx [L,3]``/``mp_bary [L,3]``, ``lmk68_vert_idx [68,3]``/``lmk68_bary``,
    ``mp_index [L]`` (long).
    """

    def __init__(self, data: FaceModelData, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        f32 = dtype
        nv = data.n_vertices
        self.n_shape, self.n_expression, self.n_joints = data.n_shape, data.n_expression, data.n_joints
        self.parents: tuple[int, ...] = tuple(int(p) for p in data.parents)
        self.name = data.name
        self.has_eyelids = data.eyelids is not None
        self.register_buffer("v_template", _as_buffer(data.v_template, f32))
        self.register_buffer("shapedirs", _as_buffer(data.shapedirs.reshape(nv * 3, -1), f32))
        self.register_buffer("exprdirs", _as_buffer(data.exprdirs.reshape(nv * 3, -1), f32))
        self.register_buffer("posedirs", _as_buffer(data.posedirs, f32))
        self.register_buffer("J_regressor", _as_buffer(data.J_regressor, f32))
        self.register_buffer("lbs_weights", _as_buffer(data.lbs_weights, f32))
        eyelids = data.eyelids if data.eyelids is not None else np.zeros((2, nv, 3))
        self.register_buffer("eyelid_dirs", _as_buffer(eyelids.reshape(2, nv * 3), f32))
        faces = torch.as_tensor(np.asarray(data.faces, np.int64))
        self.register_buffer("faces", faces)
        self.register_buffer("parents_t", torch.as_tensor(np.asarray(data.parents, np.int64)))
        self.register_buffer("_parent_of_child", torch.as_tensor(np.asarray(data.parents[1:], np.int64)),
                             persistent=False)

        def embedding(face_idx: np.ndarray | None, bary: np.ndarray | None) -> tuple[Tensor, Tensor]:
            if face_idx is None or bary is None:
                return torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3, dtype=f32)
            return faces[torch.as_tensor(np.asarray(face_idx, np.int64))], _as_buffer(bary, f32)

        mp_vi, mp_b = embedding(data.mp_face_idx, data.mp_bary)
        self.register_buffer("mp_vert_idx", mp_vi)
        self.register_buffer("mp_bary", mp_b)
        mp_index = data.mp_index if data.mp_index is not None else np.zeros(0, np.int64)
        self.register_buffer("mp_index", torch.as_tensor(np.asarray(mp_index, np.int64)))
        l68_vi, l68_b = embedding(data.lmk68_face_idx, data.lmk68_bary)
        self.register_buffer("lmk68_vert_idx", l68_vi)
        self.register_buffer("lmk68_bary", l68_b)

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @staticmethod
    def landmarks(vertices: Tensor, vert_idx: Tensor, bary: Tensor) -> Tensor:
        """``vertices [B,V,3]``, ``vert_idx [L,3]``, ``bary [L,3]`` -> ``[B,L,3]``."""
        return (vertices[:, vert_idx] * bary[None, :, :, None]).sum(-2)

    def forward(self, shape: Tensor, expression: Tensor, jaw: Tensor, eyes: Tensor,
                neck: Tensor | None = None, rotation: Tensor | None = None,
                eyelids: Tensor | None = None, translation: Tensor | None = None) -> FlameOutput:
        """Pose a batch of ``B`` heads.

        Args:
            shape: ``[B,<=n_shape]`` identity coefficients (missing trailing ones are zero).
            expression: ``[B,<=n_expression]`` expression coefficients.
            jaw: ``[B,6]`` jaw rotation (6D).
            eyes: ``[B,12]`` joint-3 then joint-4 eye rotations (6D each; see module docstring).
            neck: ``[B,6]`` or ``None`` (identity).
            rotation: ``[B,6]`` global rotation about the root joint, or ``None`` (identity).
            eyelids: ``[B,2]`` (left, right) eyelid closure, or ``None`` (0).
            translation: ``[B,3]`` metres, or ``None``.

        Returns a :class:`FlameOutput`; everything is differentiable w.r.t. every input.
        """
        B = shape.shape[0]
        dtype, device = self.v_template.dtype, self.v_template.device
        nv = self.n_vertices
        ns, ne = shape.shape[1], expression.shape[1]
        if ns > self.n_shape or ne > self.n_expression:
            raise ValueError(f"model has {self.n_shape} shape and {self.n_expression} expression components, "
                             f"got {ns} and {ne}")
        offsets = shape @ self.shapedirs[:, :ns].T + expression @ self.exprdirs[:, :ne].T   # [B,V*3]
        v_shaped = self.v_template + offsets.view(B, nv, 3)
        joints = self._rest_joints(v_shaped, shape, expression)                             # [B,J,3]

        ident = identity_6d(B, dtype=dtype, device=device)
        pose = torch.cat([rotation if rotation is not None else ident, neck if neck is not None else ident,
                          jaw, eyes], dim=1).view(B, -1, 6)
        if pose.shape[1] != self.n_joints:
            raise ValueError(f"pose has {pose.shape[1]} joints, model has {self.n_joints}")
        rot = rotation_6d_to_matrix(pose)                                                   # [B,J,3,3]
        eye3 = torch.eye(3, dtype=dtype, device=device)
        pose_feature = (rot[:, 1:] - eye3).reshape(B, -1)                                   # [B,(J-1)*9]
        v_posed = v_shaped + (pose_feature @ self.posedirs).view(B, nv, 3)

        # world rotation G_j and translation g_j of each joint (relative to its rest position)
        rel = joints.clone()
        rel[:, 1:] = joints[:, 1:] - joints[:, self._parent_of_child]
        G: list[Tensor] = []
        o: list[Tensor] = []   # posed joint positions
        for j, p in enumerate(self.parents):
            if p < 0:
                G.append(rot[:, j])
                o.append(rel[:, j])
            else:
                G.append(G[p] @ rot[:, j])
                o.append(o[p] + (G[p] @ rel[:, j, :, None])[..., 0])
        posed_joints = torch.stack(o, dim=1)                                                # [B,J,3]
        Gs = torch.stack(G, dim=1)                                                          # [B,J,3,3]
        g = posed_joints - (Gs @ joints[..., None])[..., 0]                                 # [B,J,3]
        # skinning: per-vertex blended rotation M_v = sum_j w_vj G_j and offset sum_j w_vj g_j
        M = (self.lbs_weights @ Gs.reshape(B, -1, 9)).view(B, nv, 3, 3)                   # [B,V,3,3]
        verts = (M * v_posed[:, :, None, :]).sum(-1) + self.lbs_weights @ g                # [B,V,3]
        if eyelids is not None:
            verts = verts + (eyelids @ self.eyelid_dirs).view(B, nv, 3)
        if translation is not None:
            verts = verts + translation[:, None, :]
            posed_joints = posed_joints + translation[:, None, :]
        return FlameOutput(
            vertices=verts,
            landmarks_mp=self.landmarks(verts, self.mp_vert_idx, self.mp_bary),
            landmarks_68=self.landmarks(verts, self.lmk68_vert_idx, self.lmk68_bary),
            joints=posed_joints,
        )

    def _rest_joints(self, v_shaped: Tensor, shape: Tensor, expression: Tensor) -> Tensor:
        """Joints of the shaped, unposed mesh: ``J_regressor [J,V] @ v_shaped [B,V,3]`` -> ``[B,J,3]``
        (:class:`stages.face.landmark_model.LandmarkFLAME`, which has only some vertices, regresses
        them from the coefficients instead)."""
        return torch.einsum("jv,bvk->bjk", self.J_regressor, v_shaped)

    def neutral(self, batch: int = 1) -> dict[str, Tensor]:
        """Zero / identity parameters for ``batch`` frames (keyword arguments of ``forward``)."""
        dtype, device = self.v_template.dtype, self.v_template.device
        return {
            "shape": torch.zeros(batch, self.n_shape, dtype=dtype, device=device),
            "expression": torch.zeros(batch, self.n_expression, dtype=dtype, device=device),
            "jaw": identity_6d(batch, dtype=dtype, device=device),
            "eyes": identity_6d(batch, dtype=dtype, device=device).repeat(1, 2),
        }


def _np_6d_to_matrix(d6: np.ndarray) -> np.ndarray:
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-2)


def flame_reference(data: FaceModelData, shape: np.ndarray, expression: np.ndarray, jaw: np.ndarray,
                    eyes: np.ndarray, neck: np.ndarray | None = None, rotation: np.ndarray | None = None,
                    eyelids: np.ndarray | None = None,
                    translation: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Plain float64 numpy FLAME, one frame at a time with 4x4 matrices (the textbook form).

    Same arguments as :meth:`FLAME.forward` as numpy arrays; returns ``vertices``,
    ``landmarks_mp``, ``landmarks_68``, ``joints`` like :class:`FlameOutput`. Slow; for tests."""
    B = shape.shape[0]
    ident = np.tile(np.array([1.0, 0, 0, 0, 1, 0]), (B, 1))
    rotation = ident if rotation is None else rotation
    neck = ident if neck is None else neck
    nv, nj = data.n_vertices, data.n_joints
    outs: dict[str, list[np.ndarray]] = {"vertices": [], "landmarks_mp": [], "landmarks_68": [], "joints": []}
    for b in range(B):
        s = np.zeros(data.n_shape)
        s[: shape.shape[1]] = shape[b]
        e = np.zeros(data.n_expression)
        e[: expression.shape[1]] = expression[b]
        v = data.v_template + np.einsum("vks,s->vk", data.shapedirs, s) + np.einsum("vke,e->vk", data.exprdirs, e)
        J = data.J_regressor @ v
        pose = np.concatenate([rotation[b], neck[b], jaw[b], eyes[b]]).reshape(nj, 6)
        R = _np_6d_to_matrix(pose.astype(np.float64))
        feat = (R[1:] - np.eye(3)).reshape(-1)
        v = v + (feat @ data.posedirs).reshape(nv, 3)
        world = []
        for j in range(nj):
            local = np.eye(4)
            local[:3, :3] = R[j]
            p = int(data.parents[j])
            local[:3, 3] = J[j] - (J[p] if p >= 0 else 0.0)
            world.append(local if p < 0 else world[p] @ local)
        skin = []
        for j in range(nj):
            rest = np.eye(4)
            rest[:3, 3] = -J[j]
            skin.append(world[j] @ rest)
        T = np.einsum("vj,jab->vab", data.lbs_weights, np.stack(skin))
        vh = np.concatenate([v, np.ones((nv, 1))], 1)
        verts = np.einsum("vab,vb->va", T, vh)[:, :3]
        if eyelids is not None and data.eyelids is not None:
            verts = verts + eyelids[b, 0] * data.eyelids[0] + eyelids[b, 1] * data.eyelids[1]
        joints = np.stack([w[:3, 3] for w in world])
        if translation is not None:
            verts, joints = verts + translation[b], joints + translation[b]

        def lmk(face_idx: np.ndarray | None, bary: np.ndarray | None) -> np.ndarray:
            if face_idx is None or bary is None:
                return np.zeros((0, 3))
            tri = verts[data.faces[face_idx]]           # [L,3,3]
            return np.einsum("lc,lck->lk", bary, tri)

        outs["vertices"].append(verts)
        outs["joints"].append(joints)
        outs["landmarks_mp"].append(lmk(data.mp_face_idx, data.mp_bary))
        outs["landmarks_68"].append(lmk(data.lmk68_face_idx, data.lmk68_bary))
    return {k: np.stack(v) for k, v in outs.items()}
