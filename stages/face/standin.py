"""A licence-free stand-in face model, written in FLAME's file formats.

Without the user's FLAME files the pipeline (tests, demos, synthetic videos) still needs a face
model. This one is built from MediaPipe's canonical face mesh (Apache-2.0, stored in
``stages/face/data/mediapipe_canonical_face.npz``, see ``data/NOTICE.txt``) and goes through the
**same** files and loader as FLAME: a latin-1-compatible protocol-2 pickle whose arrays are
``chumpy.ch.Ch`` objects, ``FLAME_masks.pkl``, ``mediapipe_landmark_embedding.npz`` and
``landmark_embedding.npy``.

Geometry (metres; +x subject's left, +y up, +z out of the face):

- vertices 0..467 are MediaPipe's 468 canonical landmarks (scaled from cm), in landmark order;
  vertices 468..477 are the irises in MediaPipe's refined order: 468 right iris centre, 469..472
  its contour, 473 left iris centre, 474..477 its contour (subject's right/left; the contour
  points go +x, +y, -x, -y: MediaPipe's own contour order is not documented, so this is our
  choice). Each iris is a 4-triangle fan just in front of the eye opening.
- faces: MediaPipe's 898 triangles (the eyes and mouth are closed by triangles, no holes) plus
  the 8 iris triangles.
- joints ``[global, neck, jaw, left eye, right eye]`` as in FLAME; skinning weights: the lower
  face follows the jaw with a harmonic (mesh-Laplace) blend between the upper lip (0) and the
  lower lip and chin (1), the rest follows the neck, each iris its eye; no pose correctives
  (``posedirs`` are zero).
- 300 identity directions: smooth, left-right symmetric polynomial deformations, orthogonal,
  RMS size 4 mm / (1 + k/4)^1.5 for direction ``k``.
- 100 expression directions; the first six mean something (one unit = a full expression):
  0 mouth open, 1 smile, 2 close both eyes, 3 raise brows, 4 pucker, 5 mouth corners down;
  the rest are small smooth random deformations.
- eyelid blendshapes ``[2,V,3]`` (0 = left, 1 = right, metrical-tracker's ``eyelids`` order):
  the upper lid drops onto the lower lid (which rises a little) and the iris shrinks to its
  centre, so a closed eye shows no iris.
- the 68-point embedding puts each iBUG point on one MediaPipe vertex (:data:`IBUG68_FROM_MEDIAPIPE`,
  a common approximate correspondence); the MediaPipe embedding is the identity (landmark
  ``i`` is vertex ``i``, one-hot barycentric coordinates).

Everything is deterministic: :func:`build_standin` writes the same bytes on every run.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from stages.face.flame_file import N_EXPRESSION, N_SHAPE, write_flame_pickle

STANDIN_VERSION = 3
STANDIN_NAME = f"standin-{STANDIN_VERSION}"
_DATA = Path(__file__).with_name("data") / "mediapipe_canonical_face.npz"

# MediaPipe landmark index sets (facts of MediaPipe's face-mesh topology).
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)   # subject's right eye, outer -> inner
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)   # subject's left eye, outer -> inner
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_BROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
NOSE = (1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197, 220, 275, 278, 294, 326, 327, 344, 440)
RIGHT_IRIS = (468, 469, 470, 471, 472)
LEFT_IRIS = (473, 474, 475, 476, 477)

#: iBUG 68-point index -> MediaPipe landmark (our documented approximation): jaw 0-16 from the
#: subject's right ear over the chin (152) to the left; brows 17-26; nose bridge 27-30 and base
#: 31-35; right eye 36-41 and left eye 42-47 (corner, two upper, corner, two lower); outer lips
#: 48-59 from the right corner (61); inner lips 60-67 from the right inner corner (78).
IBUG68_FROM_MEDIAPIPE = (
    127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)

_IRIS_RADIUS = 0.0055
_EYEBALL_RADIUS = 0.011


def _canonical() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe canonical mesh: ``vertices [468,3]`` metres, ``uv [468,2]`` (v up), ``faces [898,3]``."""
    with np.load(_DATA) as z:
        v = z["vertices"].astype(np.float64) * 0.01
        uv = z["uv"].astype(np.float64)
        f = z["faces"].astype(np.int64)
    uv = np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1)
    return v, uv, f


def _eye_centre(v: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...]) -> np.ndarray:
    ring = v[list(set(upper) | set(lower))]
    c = ring.mean(0)
    c[2] = ring[:, 2].max() + 0.001
    return c


def _iris(centre: np.ndarray) -> np.ndarray:
    r = _IRIS_RADIUS
    return centre + np.array([[0, 0, 0], [r, 0, 0], [0, r, 0], [-r, 0, 0], [0, -r, 0]], np.float64)


def _geometry() -> dict[str, np.ndarray]:
    v, uv, f = _canonical()
    c_right = _eye_centre(v, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)
    c_left = _eye_centre(v, LEFT_EYE_UPPER, LEFT_EYE_LOWER)
    verts = np.concatenate([v, _iris(c_right), _iris(c_left)])
    iris_faces = []
    for c in (468, 473):
        for k in range(4):
            iris_faces.append([c, c + 1 + k, c + 1 + (k + 1) % 4])
    faces = np.concatenate([f, np.asarray(iris_faces, np.int64)])
    iris_uv = np.concatenate([np.repeat(uv[[159]], 5, 0), np.repeat(uv[[386]], 5, 0)])
    return {"v": verts, "f": faces, "uv": np.concatenate([uv, iris_uv]), "c_right": c_right, "c_left": c_left}


def _laplacian(n: int, faces: np.ndarray) -> "np.ndarray":
    """Uniform graph Laplacian (dense, n is small) of the mesh edges."""
    A = np.zeros((n, n))
    for a, b in ((0, 1), (1, 2), (2, 0)):
        A[faces[:, a], faces[:, b]] = 1.0
        A[faces[:, b], faces[:, a]] = 1.0
    return np.diag(A.sum(1)) - A


def _harmonic(n: int, faces: np.ndarray, fixed: dict[int, float]) -> np.ndarray:
    """Values on vertices: ``fixed`` where given, harmonic (mesh-Laplace) elsewhere."""
    L = _laplacian(n, faces)
    idx_c = np.array(sorted(fixed), np.int64)
    val_c = np.array([fixed[i] for i in idx_c])
    free = np.setdiff1d(np.arange(n), idx_c)
    out = np.zeros(n)
    out[idx_c] = val_c
    connected = free[np.abs(L[np.ix_(free, free)]).sum(1) > 0]
    sub = L[np.ix_(connected, connected)]
    rhs = -L[np.ix_(connected, idx_c)] @ val_c
    out[connected] = np.linalg.solve(sub + 1e-12 * np.eye(len(connected)), rhs)
    return np.clip(out, 0.0, 1.0)


def _jaw_weights(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    n = v.shape[0]
    fixed: dict[int, float] = {}
    lower = set(LIPS_OUTER_LOWER[1:-1]) | set(LIPS_INNER_LOWER[1:-1])
    upper = set(LIPS_OUTER_UPPER[1:-1]) | set(LIPS_INNER_UPPER[1:-1])
    for i in range(468):
        if v[i, 1] > -0.022 or i in upper:
            fixed[i] = 0.0
        elif v[i, 1] < -0.065 or i in lower:
            fixed[i] = 1.0
    for i in range(468, n):
        fixed[i] = 0.0
    return _harmonic(n, faces, fixed)


def _smooth_basis(v: np.ndarray, count: int, degree: int = 9) -> np.ndarray:
    """``count`` orthogonal, left-right symmetric polynomial deformations ``[V,3,count]``,
    ordered from low to high degree, each with RMS vertex displacement 1."""
    p = (v - np.array([0.0, -0.005, 0.025])) / np.array([0.08, 0.09, 0.05])
    cols = []
    for total in range(degree + 1):
        for a in range(total + 1):
            for b in range(total - a + 1):
                c = total - a - b
                mono = p[:, 0] ** a * p[:, 1] ** b * p[:, 2] ** c
                for axis in range(3):
                    if (a % 2 == 1) == (axis == 0):   # x-displacement odd in x, y/z even: symmetric
                        col = np.zeros_like(v)
                        col[:, axis] = mono
                        cols.append(col.reshape(-1))
    Q = _gram_schmidt(np.stack(cols, 1), count)
    Q = Q * np.sign(Q[np.abs(Q).argmax(0), np.arange(count)])             # fixed sign
    n = v.shape[0]
    Q = Q / np.sqrt((Q ** 2).sum(0) / n)
    return Q.reshape(n, 3, count)


def _gram_schmidt(M: np.ndarray, count: int, tol: float = 1e-6) -> np.ndarray:
    """The first ``count`` orthonormal columns of ``M`` by modified Gram-Schmidt (twice per
    column), skipping columns whose residual is below ``tol`` of their norm. Written with
    elementwise products and ``sum`` only (no BLAS/LAPACK, whose threading can change the last
    bits from run to run), so the result is bit-for-bit reproducible."""
    out: list[np.ndarray] = []
    for k in range(M.shape[1]):
        col = M[:, k].copy()
        norm0 = np.sqrt((col * col).sum())
        if norm0 == 0:
            continue
        for _ in range(2):
            for q in out:
                col -= (q * col).sum() * q
        norm = np.sqrt((col * col).sum())
        if norm > tol * norm0:
            out.append(col / norm)
            if len(out) == count:
                return np.stack(out, 1)
    raise RuntimeError(f"only {len(out)} independent directions, need {count}")


def _eyelid(v: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...], iris: tuple[int, ...]) -> np.ndarray:
    """Displacements ``[V,3]`` that close one eye."""
    d = np.zeros_like(v)
    gaps = {}
    for u, lo in zip(upper[1:-1], lower[1:-1]):
        gap = v[lo] - v[u]
        d[u] = 0.8 * gap
        d[lo] = -0.2 * gap
        gaps[u] = 0.8 * gap
    # the skin above the upper lid follows, fading with distance
    centre = v[list(upper) + list(lower)].mean(0)
    top = max(v[i, 1] for i in upper)
    src = np.array(list(gaps))
    src_d = np.stack([gaps[i] for i in src])
    for i in range(468):
        if i in upper or i in lower or v[i, 1] <= top - 0.001:
            continue
        dist2 = ((v[src] - v[i]) ** 2).sum(1)
        w = np.exp(-dist2 / (2 * 0.004 ** 2))
        if abs(v[i, 0] - centre[0]) < 0.03 and w.max() > 1e-3:
            d[i] = (w[:, None] * src_d).sum(0) / max(w.sum(), 1.0)
    c = iris[0]
    for k in iris[1:]:
        d[k] = v[c] - v[k]                              # contour collapses onto the centre
    d[list(iris)] += np.array([0.0, 0.0, -0.002])        # and sinks behind the lid
    return d


def _expressions(v: np.ndarray, jaw_w: np.ndarray, eyelids: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """Expression blendshapes ``[V,3,100]``; ``smooth`` is the unit smooth basis ``[V,3,300]``."""
    n = v.shape[0]
    E = np.zeros((n, 3, N_EXPRESSION))

    def gauss(centre: np.ndarray, sigma: float) -> np.ndarray:
        return np.exp(-((v - centre) ** 2).sum(1) / (2 * sigma ** 2))

    upper_lip = np.zeros(n)
    upper_lip[list(LIPS_OUTER_UPPER[1:-1]) + list(LIPS_INNER_UPPER[1:-1])] = 1.0
    E[:, :, 0] = jaw_w[:, None] * np.array([0.0, -0.010, -0.002]) + upper_lip[:, None] * np.array([0.0, 0.002, 0.0])
    for corner in (61, 291):
        g = gauss(v[corner], 0.012)
        E[:, :, 1] += g[:, None] * np.array([np.sign(v[corner, 0]) * 0.004, 0.004, -0.001])
        E[:, :, 5] += g[:, None] * np.array([0.0, -0.004, 0.0])
    E[:, :, 2] = eyelids[0] + eyelids[1]
    eye_top = max(v[i, 1] for i in RIGHT_EYE_UPPER + LEFT_EYE_UPPER)
    brow = np.zeros(n)
    for i in RIGHT_BROW + LEFT_BROW:
        brow = np.maximum(brow, gauss(v[i], 0.010))
    brow *= np.clip((v[:, 1] - eye_top) / 0.008, 0.0, 1.0)
    E[:, 1, 3] = 0.006 * brow
    mouth = (v[13] + v[14]) / 2
    g = gauss(mouth, 0.015)
    E[:, :, 4] = g[:, None] * np.stack([-0.3 * (v[:, 0] - mouth[0]), np.zeros(n), np.full(n, 0.004)], 1)
    rest = N_EXPRESSION - 6
    basis = smooth.reshape(n * 3, N_SHAPE)
    mix = _gram_schmidt(np.random.default_rng(20241124).normal(size=(N_SHAPE, rest)), rest)
    random_dirs = np.einsum("ij,jk->ik", basis, mix)                   # orthogonal mixes (no BLAS)
    random_dirs /= np.sqrt((random_dirs ** 2).sum(0) / n)
    E[:, :, 6:] = (random_dirs * (0.0015 / (1.0 + np.arange(rest) / 5.0))).reshape(n, 3, rest)
    for i in (468, 473):  # irises move with their eye (no expression drags them off the eyeball)
        E[i:i + 5] = E[[159 if i == 468 else 386]]
    E[468:478, :, 2] = eyelids[0, 468:478] + eyelids[1, 468:478]
    return E


def _affine_regressor(v: np.ndarray, subset: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Min-norm weights over ``subset`` (summing to 1) with ``sum w_i v_i == target``."""
    A = np.concatenate([v[subset].T, np.ones((1, len(subset)))], 0)
    b = np.concatenate([target, [1.0]])
    w = np.linalg.lstsq(A, b, rcond=None)[0]
    if np.abs(A @ w - b).max() > 1e-9:
        raise RuntimeError("joint regressor cannot reproduce the joint position")
    row = np.zeros(v.shape[0])
    row[subset] = w
    return row


def _round32(x: np.ndarray) -> np.ndarray:
    """Round to float32 precision (tiny values below 1e-12 become exactly 0), kept as float64."""
    x = np.where(np.abs(x) < 1e-12, 0.0, x)
    return x.astype(np.float32).astype(np.float64)


def _face_of_vertex(faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each vertex the first face that uses it and the vertex's corner in that face."""
    face_of = np.full(n, -1, np.int64)
    corner = np.zeros(n, np.int64)
    for fi in range(faces.shape[0] - 1, -1, -1):
        for c in range(3):
            face_of[faces[fi, c]] = fi
            corner[faces[fi, c]] = c
    if (face_of < 0).any():
        raise RuntimeError("a vertex belongs to no face")
    return face_of, corner


def _mesh_boundary(faces: np.ndarray) -> np.ndarray:
    edges: dict[tuple[int, int], int] = {}
    for tri in faces:
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            key = (min(a, b), max(a, b))
            edges[key] = edges.get(key, 0) + 1
    return np.array(sorted({i for e, k in edges.items() if k == 1 for i in e}), np.int64)


def standin_arrays() -> dict[str, np.ndarray]:
    """All stand-in arrays (before they are written): ``v_template``, ``faces``, ``shapedirs``
    ``[V,3,400]``, ``posedirs``, ``J_regressor``, ``weights``, ``kintree_table``, ``eyelids``,
    ``vt``, ``ft``, ``joints`` (rest positions), ``masks`` (dict), ``mp_face_idx``, ``mp_bary``,
    ``lmk68_face_idx``, ``lmk68_bary``."""
    g = _geometry()
    v, faces = g["v"], g["f"]
    n = v.shape[0]
    jaw_w = _jaw_weights(v, faces)
    right_centre, left_centre = v[468], v[473]
    joints = np.array([
        [0.0, -0.080, -0.040],                        # global (base of the neck)
        [0.0, -0.060, -0.030],                        # neck
        [0.0, -0.020, -0.035],                        # jaw (between the jaw hinges)
        left_centre - [0.0, 0.0, _EYEBALL_RADIUS],    # left eyeball centre
        right_centre - [0.0, 0.0, _EYEBALL_RADIUS],   # right eyeball centre
    ])
    weights = np.zeros((n, 5))
    weights[:, 2] = jaw_w
    weights[:, 1] = 1.0 - jaw_w
    weights[list(LEFT_IRIS)] = [0, 0, 0, 1, 0]
    weights[list(RIGHT_IRIS)] = [0, 0, 0, 0, 1]
    oval = _mesh_boundary(faces[:898])
    eye_l = np.array(sorted(set(LEFT_EYE_UPPER + LEFT_EYE_LOWER + LEFT_IRIS)))
    eye_r = np.array(sorted(set(RIGHT_EYE_UPPER + RIGHT_EYE_LOWER + RIGHT_IRIS)))
    J_reg = np.stack([_affine_regressor(v, oval, joints[0]), _affine_regressor(v, oval, joints[1]),
                      _affine_regressor(v, oval, joints[2]), _affine_regressor(v, eye_l, joints[3]),
                      _affine_regressor(v, eye_r, joints[4])])
    eyelids = np.stack([_eyelid(v, LEFT_EYE_UPPER, LEFT_EYE_LOWER, LEFT_IRIS),
                        _eyelid(v, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_IRIS)])
    shape_rms = 0.004 / (1.0 + np.arange(N_SHAPE) / 4.0) ** 1.5
    smooth = _smooth_basis(v, N_SHAPE)
    shapedirs = np.concatenate([smooth * shape_rms, _expressions(v, jaw_w, eyelids, smooth)], 2)
    face_of, corner = _face_of_vertex(faces, n)
    bary = np.zeros((n, 3))
    bary[np.arange(n), corner] = 1.0
    ibug = np.array(IBUG68_FROM_MEDIAPIPE, np.int64)
    masks = {
        "face": np.arange(468, dtype=np.int64),
        "boundary": oval,
        "lips": np.array(sorted(set(LIPS_OUTER_UPPER + LIPS_OUTER_LOWER + LIPS_INNER_UPPER + LIPS_INNER_LOWER)), np.int64),
        "lips_inner": np.array(sorted(set(LIPS_INNER_UPPER + LIPS_INNER_LOWER)), np.int64),
        "left_eye_region": np.array(sorted(set(LEFT_EYE_UPPER + LEFT_EYE_LOWER + LEFT_BROW)), np.int64),
        "right_eye_region": np.array(sorted(set(RIGHT_EYE_UPPER + RIGHT_EYE_LOWER + RIGHT_BROW)), np.int64),
        "left_eye_opening": np.array(sorted(set(LEFT_EYE_UPPER + LEFT_EYE_LOWER)), np.int64),
        "right_eye_opening": np.array(sorted(set(RIGHT_EYE_UPPER + RIGHT_EYE_LOWER)), np.int64),
        "left_eyeball": np.array(LEFT_IRIS, np.int64),
        "right_eyeball": np.array(RIGHT_IRIS, np.int64),
        "left_eyebrow": np.array(LEFT_BROW, np.int64),
        "right_eyebrow": np.array(RIGHT_BROW, np.int64),
        "nose": np.array(NOSE, np.int64),
        "forehead": np.array([i for i in range(468) if v[i, 1] > max(v[j, 1] for j in RIGHT_BROW + LEFT_BROW) + 0.005], np.int64),
    }
    # Multithreaded BLAS may change the last bits of float64 results from run to run; rounding
    # the stored values to float32 precision makes the written bytes reproducible.
    v, shapedirs, J_reg, weights, eyelids = (_round32(x) for x in (v, shapedirs, J_reg, weights, eyelids))
    return {
        "v_template": v, "faces": faces, "shapedirs": shapedirs, "posedirs": np.zeros((n, 3, 36)),
        "J_regressor": J_reg, "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "eyelids": eyelids, "vt": _round32(g["uv"]), "ft": faces.copy(), "joints": joints, "masks": masks,
        "mp_face_idx": face_of, "mp_bary": bary, "lmk68_face_idx": face_of[ibug], "lmk68_bary": bary[ibug],
    }


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` with fixed zip timestamps, so the bytes do not depend on the clock."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


FILE_NAMES = {
    "flame": "standin_model.pkl",
    "flame-masks": "FLAME_masks.pkl",
    "mediapipe-embedding": "mediapipe_landmark_embedding.npz",
    "landmark-embedding": "landmark_embedding.npy",
}


def build_standin(directory: Path) -> dict[str, Path]:
    """Write the stand-in's four files into ``directory``; returns ``{asset kind: path}`` with the
    kinds of :mod:`stages.assets` (``flame``, ``flame-masks``, ``mediapipe-embedding``,
    ``landmark-embedding``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    a = standin_arrays()

    paths = {k: directory / name for k, name in FILE_NAMES.items()}
    write_flame_pickle(paths["flame"], {
        "f": a["faces"].astype(np.uint32),
        "v_template": a["v_template"],
        "shapedirs": a["shapedirs"],
        "posedirs": a["posedirs"],
        "J_regressor": a["J_regressor"],        # dense: readable without scipy, same bytes everywhere
        "weights": a["weights"],
        "kintree_table": a["kintree_table"],
        "eyelids": a["eyelids"],
        "vt": a["vt"],
        "ft": a["ft"],
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "flame_version": STANDIN_NAME,
        "name": STANDIN_NAME,
    }, chumpy_keys=("v_template", "shapedirs", "posedirs", "weights", "eyelids"))
    paths["flame-masks"].write_bytes(pickle.dumps(a["masks"], protocol=2))
    _write_npz(paths["mediapipe-embedding"], {
        "lmk_face_idx": a["mp_face_idx"], "lmk_b_coords": a["mp_bary"],
        "landmark_indices": np.arange(a["mp_face_idx"].shape[0], dtype=np.int64)})
    static = list(range(17, 68))
    with open(paths["landmark-embedding"], "wb") as fh:
        np.save(fh, np.array({
            "static_lmk_faces_idx": a["lmk68_face_idx"][static],
            "static_lmk_bary_coords": a["lmk68_bary"][static],
            "full_lmk_faces_idx": a["lmk68_face_idx"][None],
            "full_lmk_bary_coords": a["lmk68_bary"][None],
        }, dtype=object), allow_pickle=True)
    return paths


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "avatar-pipeline" / "standin" / str(STANDIN_VERSION)


def standin_paths(cache_dir: Path | None = None) -> dict[str, Path]:
    """The stand-in's files, built once into ``cache_dir`` (default
    ``$XDG_CACHE_HOME`` or ``~/.cache``, then ``avatar-pipeline/standin/<version>``; a temporary
    folder when that is not writable) and reused; safe when several processes build at once
    (each builds in a temporary folder and renames it into place)."""
    explicit = cache_dir is not None
    cache_dir = Path(cache_dir) if explicit else default_cache_dir()
    paths = {k: cache_dir / name for k, name in FILE_NAMES.items()}
    if all(p.is_file() for p in paths.values()):
        return paths
    try:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        if explicit:
            raise
        # a read-only home (some pods): build into a private temporary folder instead
        return standin_paths(Path(tempfile.gettempdir()) / f"avatar-pipeline-standin-{os.getuid()}" / str(STANDIN_VERSION))
    tmp = Path(tempfile.mkdtemp(prefix=".standin-", dir=cache_dir.parent))
    try:
        build_standin(tmp)
        try:
            os.rename(tmp, cache_dir)
        except OSError:
            if not all(p.is_file() for p in paths.values()):   # a half-made folder: replace it
                shutil.rmtree(cache_dir, ignore_errors=True)
                os.rename(tmp, cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths
