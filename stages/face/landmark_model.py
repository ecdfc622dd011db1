"""FLAME evaluated on its landmark vertices only: the landmark-only tracking step's face model.

Without a photometric term, a fitting step uses only the landmarks (barycentric combinations of a
few hundred vertices), yet :class:`~stages.face.flame.FLAME` poses all of its vertices (5,023 with
300 shape and 100 expression blendshapes, pose correctives and skinning). Every per-vertex
operation of FLAME is independent per vertex except the joint regression, which reads the whole
shaped mesh. It is linear in the coefficients, so it is folded into per-joint bases once::

    J = J_regressor @ (v_template + shapedirs @ shape + exprdirs @ expression)
      = J_template + J_shapedirs @ shape + J_exprdirs @ expression

and every other buffer (template, blendshapes, pose correctives, skinning weights, eyelid
blendshapes) is sliced to the vertices the MediaPipe and 68-point embeddings use. The result is the
same function of the parameters for landmarks and joints (to float rounding: the joint sum is
taken in another order), with ``vertices`` holding only the used vertices.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stages.face.flame import FLAME


class LandmarkFLAME(FLAME):
    """A :class:`FLAME` restricted to the vertices its landmarks use (build it with
    :func:`landmark_model`).

    Buffers as :class:`FLAME`'s, sliced to the ``K`` used vertices (``v_template [K,3]``,
    ``shapedirs [K*3,S]``, ``exprdirs [K*3,E]``, ``posedirs [(J-1)*9, K*3]``, ``lbs_weights [K,J]``,
    ``eyelid_dirs [2,K*3]``; ``mp_vert_idx``/``lmk68_vert_idx`` index those ``K``), plus
    ``J_template [J,3]``, ``J_shapedirs [J*3,S]``, ``J_exprdirs [J*3,E]`` (the joint regression
    folded into the bases) and ``vertex_ids [K]`` (each used vertex's index in the full model).
    ``faces`` is empty: the sub-model has no surface. ``forward`` returns ``vertices [B,K,3]``;
    ``landmarks_mp``, ``landmarks_68`` and ``joints`` equal the full model's.
    """

    def __init__(self, full: FLAME) -> None:  # noqa: D107 - see the class docstring
        nn.Module.__init__(self)
        self.n_shape, self.n_expression, self.n_joints = full.n_shape, full.n_expression, full.n_joints
        self.parents = full.parents
        self.name = full.name
        self.has_eyelids = full.has_eyelids
        used = torch.unique(torch.cat([full.mp_vert_idx.reshape(-1), full.lmk68_vert_idx.reshape(-1)]))  # sorted
        remap = torch.full((full.n_vertices,), -1, dtype=torch.long, device=used.device)
        remap[used] = torch.arange(len(used), device=used.device)
        cols = (used[:, None] * 3 + torch.arange(3, device=used.device)).reshape(-1)  # rows of the [V*3, ...] bases
        nj = full.n_joints
        with torch.no_grad():
            self.register_buffer("vertex_ids", used)
            self.register_buffer("v_template", full.v_template[used].clone())
            self.register_buffer("shapedirs", full.shapedirs[cols].clone())
            self.register_buffer("exprdirs", full.exprdirs[cols].clone())
            self.register_buffer("posedirs", full.posedirs[:, cols].clone())
            self.register_buffer("J_regressor", full.J_regressor[:, used].clone())  # not used by forward
            self.register_buffer("lbs_weights", full.lbs_weights[used].clone())
            self.register_buffer("eyelid_dirs", full.eyelid_dirs[:, cols].clone())
            self.register_buffer("faces", full.faces[:0].clone())
            self.register_buffer("parents_t", full.parents_t.clone())
            self.register_buffer("_parent_of_child", full._parent_of_child.clone(), persistent=False)
            self.register_buffer("mp_vert_idx", remap[full.mp_vert_idx])
            self.register_buffer("mp_bary", full.mp_bary.clone())
            self.register_buffer("mp_index", full.mp_index.clone())
            self.register_buffer("lmk68_vert_idx", remap[full.lmk68_vert_idx])
            self.register_buffer("lmk68_bary", full.lmk68_bary.clone())
            nv = full.n_vertices
            self.register_buffer("J_template", full.J_regressor @ full.v_template)                       # [J,3]
            self.register_buffer("J_shapedirs", _fold(full.J_regressor, full.shapedirs.view(nv, 3, -1), nj))
            self.register_buffer("J_exprdirs", _fold(full.J_regressor, full.exprdirs.view(nv, 3, -1), nj))

    def _rest_joints(self, v_shaped: Tensor, shape: Tensor, expression: Tensor) -> Tensor:
        ns, ne = shape.shape[1], expression.shape[1]
        offsets = shape @ self.J_shapedirs[:, :ns].T + expression @ self.J_exprdirs[:, :ne].T  # [B,J*3]
        return self.J_template + offsets.view(-1, self.n_joints, 3)


def _fold(J_regressor: Tensor, dirs: Tensor, n_joints: int) -> Tensor:
    """``J_regressor [J,V]`` applied to blendshapes ``dirs [V,3,C]`` -> ``[J*3, C]`` (row ``3j+k``:
    joint ``j``'s coordinate ``k``)."""
    return torch.einsum("jv,vkc->jkc", J_regressor, dirs).reshape(n_joints * 3, -1)


def landmark_model(model: nn.Module) -> nn.Module:
    """The landmark-only form of ``model``: a :class:`LandmarkFLAME` for a full :class:`FLAME`,
    ``model`` itself for anything else (a :class:`LandmarkFLAME` already, or another module)."""
    if isinstance(model, LandmarkFLAME) or not isinstance(model, FLAME):
        return model
    return LandmarkFLAME(model)
