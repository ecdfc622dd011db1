"""The face model's data, as plain numpy arrays, and the one function that loads it.

:class:`FaceModelData` is what :class:`stages.face.flame.FLAME` turns into buffers. It comes from
the user's FLAME files or, when none are given, from the licence-free stand-in model
(:mod:`stages.face.standin`), which is written in the same file formats and read by the same
loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.errors import bad_input
from stages.face import flame_file


@dataclass
class FaceModelData:
    """A FLAME-layout face model.

    Shapes: ``V`` vertices, ``F`` triangles, ``J`` joints (5 for FLAME: global, neck, jaw,
    left eye, right eye), ``L`` embedded MediaPipe landmarks.

    Attributes:
        v_template: ``[V,3]`` float64, neutral mesh in metres (+x subject's left, +y up,
            +z out of the face).
        faces: ``[F,3]`` int64 vertex indices, counter-clockwise seen from outside.
        shapedirs: ``[V,3,n_shape]`` identity blendshapes, metres per unit coefficient.
        exprdirs: ``[V,3,n_exp]`` expression blendshapes.
        posedirs: ``[(J-1)*9, V*3]`` pose correctives: row ``9*(j-1)+3*r+c`` is the offset per
            unit of ``(R_j - I)[r, c]`` (vertex-major, xyz-minor columns).
        J_regressor: ``[J,V]`` dense joint regressor.
        lbs_weights: ``[V,J]`` skinning weights, rows sum to 1.
        parents: ``[J]`` int64, ``-1`` at the root; parents come before children.
        eyelids: ``[2,V,3]`` eyelid-closing blendshapes (0 = left, 1 = right, metrical-tracker's
            ``eyelids`` order), or ``None``.
        vt, ft: UV layout, ``[T,2]`` texture coordinates (0..1, v up) and ``[F,3]`` indices into
            ``vt``, or ``None``.
        mp_face_idx, mp_bary, mp_index: MediaPipe embedding, ``[L]`` face indices, ``[L,3]``
            barycentric coordinates, ``[L]`` which of MediaPipe's 478 points; ``None`` if absent.
        lmk68_face_idx, lmk68_bary: 68-point (iBUG) embedding, ``[68]`` and ``[68,3]``, or ``None``.
        masks: region name -> vertex indices.
        name: what the model is (``"FLAME2020"``, ``"standin-3"``, ...).
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    lbs_weights: np.ndarray
    parents: np.ndarray
    eyelids: np.ndarray | None = None
    vt: np.ndarray | None = None
    ft: np.ndarray | None = None
    mp_face_idx: np.ndarray | None = None
    mp_bary: np.ndarray | None = None
    mp_index: np.ndarray | None = None
    lmk68_face_idx: np.ndarray | None = None
    lmk68_bary: np.ndarray | None = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "face-model"

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_shape(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def n_expression(self) -> int:
        return int(self.exprdirs.shape[2])

    @property
    def n_joints(self) -> int:
        return int(self.parents.shape[0])


def _read_eyelids(path: Path, n_vertices: int) -> np.ndarray:
    """Eyelid blendshapes ``[2,V,3]`` (left, right) from an ``.npz`` with ``l_eyelid`` and
    ``r_eyelid`` (or ``eyelids``), or from a folder with ``l_eyelid.npy`` / ``r_eyelid.npy``
    (metrical-tracker's ``flame/blendshapes``)."""
    path = Path(path)
    fix = "give metrical-tracker's flame/blendshapes folder (l_eyelid.npy, r_eyelid.npy) or an .npz with both"
    try:
        if path.is_dir():
            left, right = np.load(path / "l_eyelid.npy"), np.load(path / "r_eyelid.npy")
        else:
            with np.load(path, allow_pickle=False) as z:
                if "eyelids" in z.files:
                    left, right = z["eyelids"][0], z["eyelids"][1]
                else:
                    left, right = z["l_eyelid"], z["r_eyelid"]
    except (OSError, KeyError, ValueError) as err:
        raise bad_input(path, f"eyelid blendshapes unreadable ({err})", fix) from None
    out = np.stack([np.asarray(left, np.float64).reshape(-1, 3), np.asarray(right, np.float64).reshape(-1, 3)])
    if out.shape != (2, n_vertices, 3):
        raise bad_input(path, f"eyelid blendshapes have shape {out.shape}, expected [2,{n_vertices},3]", fix)
    return out


def load_face_model(flame_pkl: Path | str | None = None, *, masks: Path | str | None = None,
                    mediapipe_embedding: Path | str | None = None,
                    landmark_embedding: Path | str | None = None,
                    eyelids: Path | str | None = None, uv: Path | str | None = None) -> FaceModelData:
    """Load a face model from FLAME-format files.

    Args:
        flame_pkl: FLAME ``generic_model.pkl``; ``None`` loads the built-in stand-in model with
            all of its files (the other arguments then override single files).
        masks: ``FLAME_masks.pkl``.
        mediapipe_embedding: ``mediapipe_landmark_embedding.npz``.
        landmark_embedding: ``landmark_embedding.npy`` (68 points).
        eyelids: eyelid blendshapes (see :func:`_read_eyelids`); the stand-in pickle carries its own.
        uv: ``FLAME_texture.npz`` or a ``.obj`` with the UV layout (``vt``/``ft``; a file without
            them leaves ``vt``/``ft`` unset); the stand-in carries its own.

    Raises ``bad_input`` naming the file for any unreadable or inconsistent file.
    """
    if flame_pkl is None:
        from stages.face.standin import standin_paths

        paths = standin_paths()
        flame_pkl = paths["flame"]
        masks = masks if masks is not None else paths["flame-masks"]
        mediapipe_embedding = mediapipe_embedding if mediapipe_embedding is not None else paths["mediapipe-embedding"]
        landmark_embedding = landmark_embedding if landmark_embedding is not None else paths["landmark-embedding"]
    flame_pkl = Path(flame_pkl)
    arr = flame_file.read_flame_arrays(flame_pkl)
    nv, nf = arr["v_template"].shape[0], arr["faces"].shape[0]
    sd = arr["shapedirs"]
    n_shape = flame_file.N_SHAPE
    data = FaceModelData(
        v_template=arr["v_template"],
        faces=arr["faces"],
        shapedirs=np.ascontiguousarray(sd[:, :, :n_shape]),
        exprdirs=np.ascontiguousarray(sd[:, :, n_shape:]),
        posedirs=np.ascontiguousarray(arr["posedirs"].reshape(-1, arr["posedirs"].shape[-1]).T),
        J_regressor=arr["J_regressor"],
        lbs_weights=arr["weights"],
        parents=arr["parents"],
        eyelids=arr.get("eyelids"),
        name=arr["name"] or (arr["version"] if arr["version"] != "unknown" else flame_pkl.stem),
    )
    if "vt" in arr and "ft" in arr:
        data.vt, data.ft = np.asarray(arr["vt"], np.float64), np.asarray(arr["ft"], np.int64)
    if eyelids is not None:
        data.eyelids = _read_eyelids(Path(eyelids), nv)
    if uv is not None:
        got = flame_file.read_texture_uv(Path(uv))
        if got is not None:            # a texture file without vt/ft leaves the UV layout unset
            data.vt, data.ft = got
        if data.ft is not None and data.ft.shape != data.faces.shape:
            raise bad_input(uv, f"UV faces {data.ft.shape} do not match the model's faces {data.faces.shape}",
                            "give the UV layout of the same FLAME version")
    if masks is not None:
        data.masks = flame_file.read_masks(Path(masks))
        top = max((int(v.max()) for v in data.masks.values() if v.size), default=-1)
        if top >= nv:
            raise bad_input(masks, f"vertex index {top} but the model has {nv} vertices",
                            "give the masks of the same FLAME model")
    if mediapipe_embedding is not None:
        emb = flame_file.read_mediapipe_embedding(Path(mediapipe_embedding))
        if emb["face_idx"].max() >= nf:
            raise bad_input(mediapipe_embedding, f"face index {emb['face_idx'].max()} but the model has {nf} faces",
                            "give the embedding made for this FLAME model")
        data.mp_face_idx, data.mp_bary, data.mp_index = emb["face_idx"], emb["bary"], emb["mp_index"]
    if landmark_embedding is not None:
        emb68 = flame_file.read_landmark_embedding(Path(landmark_embedding))
        if emb68["face_idx"].max() >= nf:
            raise bad_input(landmark_embedding, f"face index {emb68['face_idx'].max()} but the model has {nf} faces",
                            "give the embedding made for this FLAME model")
        data.lmk68_face_idx, data.lmk68_bary = emb68["face_idx"], emb68["bary"]
    return data
