"""Reading (and, for tests and stand-ins, writing) the FLAME asset files, without chumpy.

Files (facts in /work/shared/docs/upstream-formats.md):

- ``generic_model.pkl`` (FLAME 2020): a latin-1 (Python 2) pickle of a dict. ``v_template``
  ``[5023,3]``, ``shapedirs`` ``[5023,3,400]`` (300 identity then 100 expression), ``posedirs``
  ``[5023,3,36]``, ``weights`` ``[5023,5]`` are chumpy ``Ch`` objects; ``f`` ``[9976,3]`` and
  ``kintree_table`` ``[2,5]`` are arrays; ``J_regressor`` ``[5,5023]`` is a scipy sparse matrix.
  chumpy pickles a ``Ch`` as ``copyreg._reconstructor(Ch, object, None)`` plus its ``__dict__``
  (``x`` holds the array); :class:`ChumpyStub` receives that state, so no chumpy is needed.
  Only numpy, scipy.sparse, copyreg and a few builtins may be named by the pickle; anything
  else is refused (a pickle can otherwise run code).
- ``FLAME_masks.pkl``: dict region name -> vertex index array.
- ``mediapipe_landmark_embedding.npz``: ``lmk_face_idx [L]``, ``lmk_b_coords [L,3]``,
  ``landmark_indices [L]`` (which of MediaPipe's 478 points).
- ``landmark_embedding.npy``: a 0-d object array holding a dict; ``static_lmk_faces_idx [51]``,
  ``static_lmk_bary_coords [51,3]``, ``dynamic_lmk_faces_idx [79,17]``,
  ``dynamic_lmk_bary_coords [79,17,3]`` (contour by yaw, -39..39 degrees; DECA's copy stores
  the dynamic ones as torch tensors), ``full_lmk_faces_idx [1,68]``, ``full_lmk_bary_coords
  [1,68,3]`` (the 68 iBUG points with a static contour).
- ``FLAME_texture.npz``: ``mean [512,512,3]``, ``tex_dir [512,512,3,200]`` (and often ``vt``,
  ``ft``: the UV layout).

FLAME 2020 vs 2023: public code that loads both (VHAP, GaussianAvatars, face-to-face) shows the
same keys and shapes (5023 vertices, 9976 faces, 400 blendshapes, 36 pose correctives, joints
``[global, neck, jaw, left eye, right eye]``); the 2023 release revised the eye region and
the expression space, which no shape reveals. So the version check is, in order: an explicit
``flame_version`` key in the pickle (our stand-in and test files carry one; MPI's do not), then
the file name (``flame2023*.pkl`` is 2023; ``generic_model.pkl`` or a name with ``2020`` is
2020). A file named neither way is reported as ``"unknown"`` and accepted as 2020 with that
fact recorded. A renamed 2023 file cannot be told apart: that is a known limit.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from stages.errors import bad_input

N_SHAPE = 300
N_EXPRESSION = 100
FLAME_VERTICES = 5023
FLAME_FACES = 9976
FLAME_JOINTS = 5
MEDIAPIPE_POINTS = 478

_FLAME_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


class ChumpyStub:
    """Stands in for any ``chumpy`` class while unpickling: keeps the pickled state.

    ``x`` is the stored array (``None`` for a chumpy expression that stores no array, which
    FLAME files do not contain)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_state"] = {}

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state if isinstance(state, dict) else {"state": state}

    @property
    def x(self) -> np.ndarray | None:
        value = self.__dict__.get("_state", {}).get("x")
        return None if value is None else np.asarray(value)


_ALLOWED_BUILTINS = {"set", "frozenset", "object", "dict", "list", "tuple", "slice", "complex",
                     "bytearray", "int", "float", "str", "bool"}


class _FlameUnpickler(pickle.Unpickler):
    """Maps ``chumpy.*`` to :class:`ChumpyStub`; allows numpy, scipy.sparse, copyreg, builtins."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return ChumpyStub
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return copyreg._reconstructor
        if module in ("__builtin__", "builtins") and name in _ALLOWED_BUILTINS:
            return super().find_class("builtins", name)
        if (module, name) in (("collections", "OrderedDict"), ("_codecs", "encode")):
            return super().find_class(module, name)
        if module.split(".")[0] == "numpy":
            return super().find_class(module, name)
        if module.startswith("scipy.sparse"):
            import scipy.sparse
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError):  # old private module paths (scipy.sparse.csc)
                return getattr(scipy.sparse, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_pickle(path: Path) -> Any:
    """Unpickle a FLAME-style latin-1 pickle with chumpy objects replaced by :class:`ChumpyStub`.

    Raises ``bad_input`` for a file that is not such a pickle (or is truncated)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _FlameUnpickler(fh, encoding="latin1").load()
    except FileNotFoundError:
        raise bad_input(path, "no such file", "give the path to the file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError, UnicodeDecodeError) as err:
        raise bad_input(path, f"not a readable pickle ({type(err).__name__}: {err})",
                        "give the original file from the FLAME website (flame.is.tue.mpg.de)") from None


def to_array(value: Any, dtype: Any = None) -> np.ndarray:
    """A chumpy stub, scipy sparse matrix, torch tensor or array-like -> dense numpy array."""
    if isinstance(value, ChumpyStub):
        x = value.x
        if x is None:
            raise ValueError("a chumpy object with no stored array")
        value = x
    elif hasattr(value, "toarray"):
        try:
            value = value.toarray()
        except Exception:  # an old scipy pickle whose attributes the installed scipy does not expect
            value = _sparse_from_state(vars(value))
    elif hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    elif not isinstance(value, np.ndarray) and hasattr(value, "__dict__") and "data" in vars(value):
        value = _sparse_from_state(vars(value))
    arr = np.asarray(value)
    return arr.astype(dtype) if dtype is not None else arr


def _sparse_from_state(state: dict) -> np.ndarray:
    """Dense array from an old scipy sparse matrix's attribute dict (csc/csr)."""
    import scipy.sparse as sp

    shape = tuple(state.get("_shape") or state.get("shape"))
    fmt = state.get("format", "csc")
    cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
    return cls((state["data"], state["indices"], state["indptr"]), shape=shape).toarray()


def flame_version_of(path: Path, data: dict) -> str:
    """``"FLAME2020"``, ``"FLAME2023"`` or ``"unknown"`` (see the module docstring for the rule)."""
    marker = data.get("flame_version")
    if isinstance(marker, (str, bytes)):
        marker = marker.decode() if isinstance(marker, bytes) else marker
        if "2023" in marker:
            return "FLAME2023"
        if "2020" in marker:
            return "FLAME2020"
        return marker
    name = Path(path).name.lower()
    if "2023" in name:
        return "FLAME2023"
    if "2020" in name or name == "generic_model.pkl":
        return "FLAME2020"
    return "unknown"


def read_flame_arrays(path: Path) -> dict[str, Any]:
    """Load a FLAME-format pickle into plain numpy arrays, checked.

    Returns a dict: ``v_template [V,3] float64``, ``faces [F,3] int64``, ``shapedirs [V,3,S]``,
    ``posedirs [V,3,P]``, ``J_regressor [J,V]`` (dense), ``weights [V,J]``, ``parents [J]`` (int64,
    ``-1`` at the root), ``version`` (str) and, when the file has them, ``eyelids [2,V,3]``,
    ``vt [T,2]``, ``ft [F,3]``; ``name`` (the pickle's ``name`` string, else ``None``). Raises ``bad_input`` naming the file and what was
    expected when keys or shapes are wrong."""
    path = Path(path)
    data = load_pickle(path)
    fix = "give FLAME 2020's generic_model.pkl from flame.is.tue.mpg.de"
    if not isinstance(data, dict):
        raise bad_input(path, f"holds a {type(data).__name__}, expected a dict of FLAME arrays", fix)
    missing = [k for k in _FLAME_KEYS if k not in data]
    if missing:
        raise bad_input(path, f"missing keys {missing} (has {sorted(map(str, data))[:12]})", fix)
    try:
        out: dict[str, Any] = {
            "v_template": to_array(data["v_template"], np.float64),
            "faces": to_array(data["f"]).astype(np.int64),
            "shapedirs": to_array(data["shapedirs"], np.float64),
            "posedirs": to_array(data["posedirs"], np.float64),
            "J_regressor": to_array(data["J_regressor"], np.float64),
            "weights": to_array(data["weights"], np.float64),
            "kintree_table": to_array(data["kintree_table"]).astype(np.int64),
        }
        for key in ("eyelids", "vt", "ft"):
            if key in data:
                out[key] = to_array(data[key])
    except (ValueError, TypeError, KeyError) as err:
        raise bad_input(path, f"an array could not be read ({err})", fix) from None
    v, f = out["v_template"], out["faces"]
    nv = v.shape[0] if v.ndim == 2 else -1

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise bad_input(path, what, fix)

    need(v.ndim == 2 and v.shape[1] == 3, f"v_template has shape {v.shape}, expected [V,3]")
    need(f.ndim == 2 and f.shape[1] == 3 and f.size > 0 and f.min() >= 0 and f.max() < nv,
         f"f has shape {f.shape} or indices outside 0..{nv - 1}, expected [F,3] vertex indices")
    sd = out["shapedirs"]
    need(sd.ndim == 3 and sd.shape[:2] == (nv, 3) and sd.shape[2] > N_SHAPE,
         f"shapedirs has shape {sd.shape}, expected [{nv},3,{N_SHAPE}+{N_EXPRESSION}]")
    kt = out["kintree_table"]
    need(kt.ndim == 2 and kt.shape[0] == 2, f"kintree_table has shape {kt.shape}, expected [2,J]")
    nj = kt.shape[1]
    need(out["J_regressor"].shape == (nj, nv), f"J_regressor has shape {out['J_regressor'].shape}, expected [{nj},{nv}]")
    need(out["weights"].shape == (nv, nj), f"weights has shape {out['weights'].shape}, expected [{nv},{nj}]")
    pd = out["posedirs"]
    need(pd.shape == (nv, 3, (nj - 1) * 9), f"posedirs has shape {pd.shape}, expected [{nv},3,{(nj - 1) * 9}]")
    parents = kt[0].copy()
    parents[0] = -1
    need(bool(np.all((parents[1:] >= 0) & (parents[1:] < np.arange(1, nj)))),
         f"kintree_table parents {parents.tolist()} are not a tree ordered parent-first")
    out["parents"] = parents
    if "eyelids" in out:
        need(out["eyelids"].shape == (2, nv, 3), f"eyelids has shape {out['eyelids'].shape}, expected [2,{nv},3]")
    if "vt" in out and "ft" in out:
        need(out["ft"].shape == f.shape, f"ft has shape {out['ft'].shape}, expected {f.shape}")
    out["version"] = flame_version_of(path, data)
    name = data.get("name")
    out["name"] = name.decode() if isinstance(name, bytes) else (name if isinstance(name, str) else None)
    return out


def validate_flame_model(path: Path, expect: str = "FLAME2020") -> dict[str, Any]:
    """Check a FLAME model pickle; return its facts. ``expect``: ``"FLAME2020"`` (what the
    pipeline's embeddings and FlashAvatar are built for) or ``"FLAME2023"``. Raises ``bad_input``
    for a wrong file, keys, shapes or version."""
    path = Path(path)
    arr = read_flame_arrays(path)
    version = arr["version"]
    other = {"FLAME2020": "FLAME2023", "FLAME2023": "FLAME2020"}.get(expect)
    if version == other:
        raise bad_input(path, f"is a {version} model, expected {expect}",
                        f"download {expect} ({'generic_model.pkl' if expect == 'FLAME2020' else 'flame2023.pkl'}) "
                        "from flame.is.tue.mpg.de")
    return {
        "vertices": int(arr["v_template"].shape[0]),
        "faces": int(arr["faces"].shape[0]),
        "shape_components": N_SHAPE,
        "expression_components": int(arr["shapedirs"].shape[2] - N_SHAPE),
        "joints": int(arr["parents"].shape[0]),
        "version": version if version != "unknown" else f"unknown (assumed {expect})",
    }


def read_masks(path: Path) -> dict[str, np.ndarray]:
    """``FLAME_masks.pkl`` -> ``{region: int64 vertex indices}``."""
    path = Path(path)
    data = load_pickle(path)
    fix = "give FLAME_masks.pkl from the FLAME website (FLAME Vertex Masks)"
    if not isinstance(data, dict) or not data:
        raise bad_input(path, f"holds a {type(data).__name__}, expected a dict region -> vertex indices", fix)
    out = {}
    for key, value in data.items():
        try:
            idx = to_array(value)
        except (ValueError, TypeError):
            raise bad_input(path, f"region {key!r} is not an index array", fix) from None
        if idx.ndim != 1 or (idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0)):
            raise bad_input(path, f"region {key!r} has shape {idx.shape} dtype {idx.dtype}, "
                            "expected a 1-D array of vertex indices", fix)
        out[key.decode() if isinstance(key, bytes) else str(key)] = idx.astype(np.int64)
    return out


def validate_flame_masks(path: Path) -> dict[str, Any]:
    """Check ``FLAME_masks.pkl``: a dict with (at least) ``face``, ``lips`` and ``boundary``."""
    masks = read_masks(Path(path))
    missing = [k for k in ("face", "lips", "boundary") if k not in masks]
    if missing:
        raise bad_input(path, f"has regions {sorted(masks)}, missing {missing}",
                        "give FLAME_masks.pkl from the FLAME website (FLAME Vertex Masks)")
    top = max(int(v.max()) for v in masks.values() if v.size)
    return {"regions": sorted(masks), "max_vertex": top}


def read_mediapipe_embedding(path: Path) -> dict[str, np.ndarray]:
    """``mediapipe_landmark_embedding.npz`` -> ``face_idx [L] int64``, ``bary [L,3] float64``,
    ``mp_index [L] int64`` (indices into MediaPipe's 478 points). Checked."""
    path = Path(path)
    fix = "give mediapipe_landmark_embedding.npz (from metrical-tracker's flame/mediapipe folder)"
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise bad_input(path, "no such file", fix) from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise bad_input(path, f"not a readable .npz ({err})", fix) from None
    missing = [k for k in ("lmk_face_idx", "lmk_b_coords", "landmark_indices") if k not in data]
    if missing:
        raise bad_input(path, f"missing keys {missing} (has {sorted(data)})", fix)
    face_idx = np.asarray(data["lmk_face_idx"]).reshape(-1).astype(np.int64)
    bary = np.asarray(data["lmk_b_coords"], dtype=np.float64)
    mp_index = np.asarray(data["landmark_indices"]).reshape(-1).astype(np.int64)
    n = face_idx.shape[0]
    if bary.shape != (n, 3) or mp_index.shape != (n,):
        raise bad_input(path, f"lmk_face_idx {face_idx.shape}, lmk_b_coords {bary.shape}, landmark_indices "
                        f"{mp_index.shape} disagree, expected [L], [L,3], [L]", fix)
    if n == 0 or face_idx.min() < 0 or mp_index.min() < 0 or mp_index.max() >= MEDIAPIPE_POINTS:
        raise bad_input(path, f"indices out of range (landmark_indices must be in 0..{MEDIAPIPE_POINTS - 1})", fix)
    if not np.allclose(bary.sum(-1), 1.0, atol=1e-3):
        raise bad_input(path, "lmk_b_coords rows do not sum to 1 (not barycentric coordinates)", fix)
    return {"face_idx": face_idx, "bary": bary, "mp_index": mp_index}


def validate_mediapipe_embedding(path: Path) -> dict[str, Any]:
    """Check ``mediapipe_landmark_embedding.npz``; facts: landmark count, largest face index."""
    emb = read_mediapipe_embedding(Path(path))
    return {"landmarks": int(emb["face_idx"].shape[0]), "max_face": int(emb["face_idx"].max())}


def read_landmark_embedding(path: Path) -> dict[str, np.ndarray]:
    """``landmark_embedding.npy`` -> ``face_idx [68] int64``, ``bary [68,3]`` (the ``full_*``
    static 68-point set) plus ``dynamic_face_idx [79,17]``, ``dynamic_bary [79,17,3]`` when
    present. The file is an object array: it is unpickled like every upstream tool does
    (``allow_pickle``), so only load files you trust (the FLAME website's, DECA's)."""
    path = Path(path)
    fix = "give landmark_embedding.npy (DECA / metrical-tracker's 68-point FLAME embedding)"
    try:
        raw = np.load(path, allow_pickle=True, encoding="latin1")
    except FileNotFoundError:
        raise bad_input(path, "no such file", fix) from None
    except (ValueError, OSError, EOFError, pickle.UnpicklingError, ImportError, AttributeError) as err:
        raise bad_input(path, f"not a readable .npy ({type(err).__name__}: {err})", fix) from None
    data = raw[()] if isinstance(raw, np.ndarray) and raw.dtype == object and raw.ndim == 0 else raw
    if not isinstance(data, dict):
        raise bad_input(path, f"holds {type(data).__name__}, expected a 0-d object array with a dict", fix)
    missing = [k for k in ("full_lmk_faces_idx", "full_lmk_bary_coords") if k not in data]
    if missing:
        raise bad_input(path, f"missing keys {missing} (has {sorted(map(str, data))})", fix)
    try:
        face_idx = to_array(data["full_lmk_faces_idx"]).reshape(-1).astype(np.int64)
        bary = to_array(data["full_lmk_bary_coords"], np.float64).reshape(-1, 3)
    except (ValueError, TypeError) as err:
        raise bad_input(path, f"full_lmk_* arrays unreadable ({err})", fix) from None
    if face_idx.shape != (68,) or bary.shape != (68, 3):
        raise bad_input(path, f"full_lmk_faces_idx has {face_idx.size} entries, full_lmk_bary_coords "
                        f"{bary.shape}; expected 68 and [68,3]", fix)
    if face_idx.min() < 0 or not np.allclose(bary.sum(-1), 1.0, atol=1e-3):
        raise bad_input(path, "negative face indices or barycentric rows not summing to 1", fix)
    out = {"face_idx": face_idx, "bary": bary}
    if "dynamic_lmk_faces_idx" in data and "dynamic_lmk_bary_coords" in data:
        dfi = to_array(data["dynamic_lmk_faces_idx"]).astype(np.int64)
        dbc = to_array(data["dynamic_lmk_bary_coords"], np.float64)
        if dfi.ndim != 2 or dbc.shape != (*dfi.shape, 3):
            raise bad_input(path, f"dynamic_lmk_faces_idx {dfi.shape} and dynamic_lmk_bary_coords {dbc.shape} "
                            "disagree, expected [A,17] and [A,17,3]", fix)
        out["dynamic_face_idx"], out["dynamic_bary"] = dfi, dbc
    return out


def validate_landmark_embedding(path: Path) -> dict[str, Any]:
    """Check ``landmark_embedding.npy``; facts: 68 points, whether the dynamic contour is there."""
    emb = read_landmark_embedding(Path(path))
    facts: dict[str, Any] = {"landmarks": 68, "max_face": int(emb["face_idx"].max())}
    if "dynamic_face_idx" in emb:
        facts["dynamic_contour"] = list(emb["dynamic_face_idx"].shape)
    return facts


def _npz_member_header(zf: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array in an .npz, reading only its .npy header."""
    with zf.open(name + ".npy") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return shape, dtype


def validate_flame_texture(path: Path) -> dict[str, Any]:
    """Check ``FLAME_texture.npz`` (``mean [H,W,3]``, ``tex_dir [H,W,3,K]``) from its headers only
    (the file is hundreds of MB)."""
    path = Path(path)
    fix = "give FLAME_texture.npz (FLAME texture space from the FLAME website)"
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
            missing = [k for k in ("mean", "tex_dir") if k not in names]
            if missing:
                raise bad_input(path, f"missing arrays {missing} (has {sorted(names)})", fix)
            mean_shape, _ = _npz_member_header(zf, "mean")
            dir_shape, _ = _npz_member_header(zf, "tex_dir")
    except FileNotFoundError:
        raise bad_input(path, "no such file", fix) from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise bad_input(path, f"not a readable .npz ({err})", fix) from None
    if len(mean_shape) != 3 or mean_shape[2] != 3 or len(dir_shape) != 4 or tuple(dir_shape[:3]) != tuple(mean_shape):
        raise bad_input(path, f"mean {mean_shape} and tex_dir {dir_shape}, expected [H,W,3] and [H,W,3,K]", fix)
    return {"size": [int(mean_shape[0]), int(mean_shape[1])], "components": int(dir_shape[3]),
            "uv_layout": bool({"vt", "ft"} <= names)}


def read_texture_uv(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(vt [T,2], ft [F,3])`` from ``FLAME_texture.npz`` (reading only those two arrays) or from
    a ``.obj`` (``vt`` lines and the texture indices of ``f`` lines); ``None`` if absent."""
    path = Path(path)
    if path.suffix.lower() == ".obj":
        vt, ft = [], []
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "vt":
                vt.append([float(parts[1]), float(parts[2])])
            elif parts[0] == "f" and all("/" in p for p in parts[1:4]):
                ft.append([int(p.split("/")[1]) - 1 for p in parts[1:4]])
        if not vt or not ft:
            return None
        return np.asarray(vt, np.float64), np.asarray(ft, np.int64)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "vt" in z.files and "ft" in z.files:
                return np.asarray(z["vt"], np.float64), np.asarray(z["ft"]).astype(np.int64)
    except FileNotFoundError:
        raise bad_input(path, "no such file", "give FLAME_texture.npz or head_template.obj") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise bad_input(path, f"not a readable .npz ({err})", "give FLAME_texture.npz or head_template.obj") from None
    return None


# --------------------------------------------------------------------------------------------
# Writing FLAME-format pickles (stand-in model, test files). Arrays listed in ``chumpy_keys``
# are wrapped so that the pickle names class ``chumpy.ch.Ch`` exactly as chumpy's own files do
# (``copyreg._reconstructor(Ch, object, None)`` + a state dict with ``x``), with no chumpy.

_CH_PLACEHOLDER_MODULE = "stages.face.flame_file"
_CH_PLACEHOLDER_NAME = "_ChWritePlaceholder"


class _ChWritePlaceholder:
    """Pickles as a chumpy ``Ch`` holding ``x`` (after the module/name rewrite in
    :func:`write_flame_pickle`)."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def __reduce_ex__(self, protocol: int) -> Any:
        state = {"x": self.x, "_dirty_vars": set(), "_itr": None, "_make_dense": False, "_make_sparse": False}
        return (copyreg._reconstructor, (type(self), object, None), state)


def write_flame_pickle(path: Path, data: dict[str, Any], chumpy_keys: tuple[str, ...] = (
        "v_template", "shapedirs", "posedirs", "weights")) -> None:
    """Write ``data`` as a protocol-2 pickle in FLAME's layout; the ``chumpy_keys`` arrays become
    ``chumpy.ch.Ch`` objects. Deterministic: the same dict (same insertion order) gives the same
    bytes."""
    wrapped = {k: (_ChWritePlaceholder(np.asarray(v)) if k in chumpy_keys else v) for k, v in data.items()}
    buf = io.BytesIO()
    pickle.Pickler(buf, protocol=2).dump(wrapped)
    raw = buf.getvalue()
    token = f"c{_CH_PLACEHOLDER_MODULE}\n{_CH_PLACEHOLDER_NAME}\n".encode()
    if raw.count(token) != 1 and any(k in data for k in chumpy_keys):
        raise RuntimeError("unexpected pickle layout while writing the chumpy class reference")
    raw = raw.replace(token, b"cchumpy.ch\nCh\n")
    Path(path).write_bytes(raw)


def sparse_or_dense(matrix: np.ndarray) -> Any:
    """``scipy.sparse.csc_matrix(matrix)`` as in FLAME's files when scipy is installed, else the
    dense array (the loader reads both)."""
    try:
        import scipy.sparse as sp
    except ImportError:
        return np.asarray(matrix)
    return sp.csc_matrix(matrix)


def write_fake_flame_pkl(path: Path, seed: int = 0, *, version: str = "FLAME2020",
                         n_vertices: int = FLAME_VERTICES, n_faces: int = FLAME_FACES) -> Path:
    """Write a random, FLAME-sized model in FLAME's pickle format (for tests and benchmarks).

    Geometry: a unit-ish ellipsoid head (metres, ~0.2 m) sampled on a latitude/longitude grid
    with ``n_vertices`` vertices and ``n_faces`` triangles (extra faces repeat earlier ones
    with rotated corners if the grid makes fewer); smooth random blendshapes (low-order
    polynomials of position, millimetre scale), five joints ``[global, neck, jaw, left eye,
    right eye]``, a sparse ``J_regressor``, skinning weights and pose correctives. ``version``
    is stored as the ``flame_version`` key (see :func:`flame_version_of`)."""
    rng = np.random.default_rng(seed)
    n_lat = 60
    n_lon = max(3, (n_vertices - 2) // n_lat)
    lat = np.linspace(0.0, np.pi, n_lat + 2)[1:-1]
    lon = np.linspace(0.0, 2 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    pts = np.stack([np.sin(la) * np.sin(lo) * 0.075, np.cos(la) * 0.11, np.sin(la) * np.cos(lo) * 0.095], -1).reshape(-1, 3)
    poles = np.array([[0.0, 0.11, 0.0], [0.0, -0.11, 0.0]])
    v = np.concatenate([pts, poles])
    extra = n_vertices - v.shape[0]
    if extra > 0:
        v = np.concatenate([v, v[rng.choice(pts.shape[0], extra)] * 0.98])
    v = v[:n_vertices]
    faces = []
    for i in range(n_lat - 1):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [[a, c, b], [b, c, d]]
    top, bottom = n_lat * n_lon, n_lat * n_lon + 1
    for j in range(n_lon):
        faces.append([top, j, (j + 1) % n_lon])
        last = (n_lat - 1) * n_lon
        faces.append([bottom, last + (j + 1) % n_lon, last + j])
    f = np.asarray(faces, np.int64)
    while f.shape[0] < n_faces:
        f = np.concatenate([f, np.roll(f[: n_faces - f.shape[0]], 1, axis=1)])
    f = f[:n_faces]
    n_basis = N_SHAPE + N_EXPRESSION
    feats = np.concatenate([v, v ** 2 * 10, v[:, :1] * v[:, 1:2] * 10, np.ones((n_vertices, 1))], 1)  # [V,8]
    coef = rng.normal(size=(feats.shape[1], 3, n_basis)) * 1e-3 / (1 + np.arange(n_basis) / 30.0)
    shapedirs = np.einsum("vf,fkb->vkb", feats, coef)
    joints_at = np.array([[0, -0.09, -0.01], [0, -0.07, -0.02], [0, -0.03, 0.02], [0.03, 0.03, 0.07], [-0.03, 0.03, 0.07]])
    d2 = ((v[:, None, :] - joints_at[None]) ** 2).sum(-1)
    w = np.exp(-d2 / 0.002)
    w /= w.sum(1, keepdims=True)
    jreg = np.zeros((5, n_vertices))
    for j in range(5):
        near = np.argsort(d2[:, j])[:8]
        jreg[j, near] = 1.0 / 8
    posedirs = np.einsum("vf,fkp->vkp", feats, rng.normal(size=(feats.shape[1], 3, 36)) * 1e-4)
    data = {
        "f": f.astype(np.uint32),
        "v_template": v,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": sparse_or_dense(jreg),
        "weights": w,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "flame_version": version,
    }
    write_flame_pickle(Path(path), data)
    return Path(path)
