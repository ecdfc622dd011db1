"""Chumpy-free FLAME pickle loading, the asset validators and their one-line errors."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from stages.assets import kind
from stages.errors import BadInput
from stages.face import flame_file as ff


@pytest.fixture(scope="module")
def fake_pkl(tmp_path_factory):
    return ff.write_fake_flame_pkl(tmp_path_factory.mktemp("flame") / "generic_model.pkl", seed=3,
                                   n_vertices=602, n_faces=1200)


def _small_flame_dict(rng, nv=12, nj=5):
    return {
        "f": rng.integers(0, nv, size=(20, 3)).astype(np.uint32),
        "v_template": rng.normal(size=(nv, 3)),
        "shapedirs": rng.normal(size=(nv, 3, 400)),
        "posedirs": rng.normal(size=(nv, 3, (nj - 1) * 9)),
        "J_regressor": sp.csc_matrix(rng.random((nj, nv)) * (rng.random((nj, nv)) > 0.7)),
        "weights": rng.random((nv, nj)),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
    }


def test_chumpy_objects_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    data = _small_flame_dict(rng)
    path = tmp_path / "generic_model.pkl"
    ff.write_flame_pickle(path, data)
    raw = path.read_bytes()
    assert b"cchumpy.ch\nCh\n" in raw and b"stages" not in raw
    with pytest.raises(ModuleNotFoundError, match="chumpy"):  # a plain unpickler needs chumpy
        pickle.loads(raw, encoding="latin1")
    loaded = ff.load_pickle(path)
    assert isinstance(loaded["shapedirs"], ff.ChumpyStub)
    np.testing.assert_array_equal(loaded["shapedirs"].x, data["shapedirs"])
    arr = ff.read_flame_arrays(path)
    for key in ("v_template", "shapedirs", "posedirs", "weights"):
        np.testing.assert_array_equal(arr[key], data[key])
    np.testing.assert_array_equal(arr["J_regressor"], data["J_regressor"].toarray())
    np.testing.assert_array_equal(arr["faces"], data["f"].astype(np.int64))
    assert arr["parents"].tolist() == [-1, 0, 1, 1, 1]
    assert arr["version"] == "FLAME2020"


def test_writer_is_deterministic(tmp_path):
    a = ff.write_fake_flame_pkl(tmp_path / "a.pkl", seed=5, n_vertices=302, n_faces=600)
    b = ff.write_fake_flame_pkl(tmp_path / "b.pkl", seed=5, n_vertices=302, n_faces=600)
    assert a.read_bytes() == b.read_bytes()


def test_validate_flame_model_facts(fake_pkl):
    facts = ff.validate_flame_model(fake_pkl)
    assert facts == {"vertices": 602, "faces": 1200, "shape_components": 300, "expression_components": 100,
                     "joints": 5, "version": "FLAME2020"}
    assert kind("flame").validate(fake_pkl) == facts   # the registry in stages.assets finds it


def test_flame_sized_fake(tmp_path):
    facts = ff.validate_flame_model(ff.write_fake_flame_pkl(tmp_path / "generic_model.pkl", seed=0))
    assert (facts["vertices"], facts["faces"]) == (5023, 9976)


def test_version_mismatch_both_ways(tmp_path):
    p23 = ff.write_fake_flame_pkl(tmp_path / "model.pkl", seed=1, version="FLAME2023", n_vertices=302, n_faces=600)
    with pytest.raises(BadInput, match=r"model\.pkl: is a FLAME2023 model, expected FLAME2020"):
        ff.validate_flame_model(p23)
    assert ff.validate_flame_model(p23, expect="FLAME2023")["version"] == "FLAME2023"
    p20 = ff.write_fake_flame_pkl(tmp_path / "other.pkl", seed=1, version="FLAME2020", n_vertices=302, n_faces=600)
    with pytest.raises(BadInput, match="is a FLAME2020 model, expected FLAME2023"):
        ff.validate_flame_model(p20, expect="FLAME2023")


def test_version_from_file_name(tmp_path):
    data = _small_flame_dict(np.random.default_rng(1))
    ff.write_flame_pickle(tmp_path / "flame2023.pkl", data)
    ff.write_flame_pickle(tmp_path / "my_head.pkl", data)
    with pytest.raises(BadInput, match="FLAME2023"):
        ff.validate_flame_model(tmp_path / "flame2023.pkl")
    assert ff.validate_flame_model(tmp_path / "my_head.pkl")["version"] == "unknown (assumed FLAME2020)"


def test_truncated_and_not_a_pickle(tmp_path, fake_pkl):
    cut = tmp_path / "generic_model.pkl"
    cut.write_bytes(fake_pkl.read_bytes()[:5000])
    with pytest.raises(BadInput) as err:
        ff.validate_flame_model(cut)
    assert str(err.value).startswith(f"{cut}: not a readable pickle") and "\n" not in str(err.value)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(BadInput, match="not a readable pickle"):
        ff.validate_flame_model(junk)


def test_code_in_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(BadInput, match="refusing to load"):
        ff.validate_flame_model(path)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("shapedirs"), r"missing keys \['shapedirs'\]"),
    (lambda d: d.__setitem__("posedirs", np.zeros((12, 3, 30))), r"posedirs has shape \(12, 3, 30\), expected \[12,3,36\]"),
    (lambda d: d.__setitem__("weights", np.zeros((11, 5))), "weights has shape"),
    (lambda d: d.__setitem__("f", np.full((4, 3), 99)), "indices outside"),
    (lambda d: d.__setitem__("shapedirs", np.zeros((12, 3, 200))), "shapedirs has shape"),
])
def test_wrong_keys_and_shapes(tmp_path, mutate, message):
    data = _small_flame_dict(np.random.default_rng(2))
    mutate(data)
    path = tmp_path / "generic_model.pkl"
    ff.write_flame_pickle(path, data)
    with pytest.raises(BadInput, match=message):
        ff.validate_flame_model(path)


def test_not_a_dict(tmp_path):
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(BadInput, match="holds a list"):
        ff.validate_flame_model(path)


def test_masks(tmp_path):
    good = {"face": np.arange(10), "lips": np.arange(3), "boundary": np.array([5, 6]), "neck": np.arange(4)}
    p = tmp_path / "FLAME_masks.pkl"
    p.write_bytes(pickle.dumps(good, protocol=2))
    facts = ff.validate_flame_masks(p)
    assert facts == {"regions": ["boundary", "face", "lips", "neck"], "max_vertex": 9}
    p.write_bytes(pickle.dumps({"face": np.arange(3)}, protocol=2))
    with pytest.raises(BadInput, match=r"missing \['lips', 'boundary'\]"):
        ff.validate_flame_masks(p)
    p.write_bytes(pickle.dumps({"face": np.zeros((2, 2), int), "lips": [1], "boundary": [2]}, protocol=2))
    with pytest.raises(BadInput, match="expected a 1-D array"):
        ff.validate_flame_masks(p)


def test_mediapipe_embedding(tmp_path):
    p = tmp_path / "mediapipe_landmark_embedding.npz"
    bary = np.random.default_rng(0).dirichlet([1, 1, 1], size=105)
    np.savez(p, lmk_face_idx=np.arange(105), lmk_b_coords=bary, landmark_indices=np.arange(105) * 4)
    assert ff.validate_mediapipe_embedding(p) == {"landmarks": 105, "max_face": 104}
    emb = ff.read_mediapipe_embedding(p)
    assert emb["mp_index"][-1] == 416 and emb["bary"].shape == (105, 3)
    np.savez(p, lmk_face_idx=np.arange(5), lmk_b_coords=np.ones((5, 3)), landmark_indices=np.arange(5))
    with pytest.raises(BadInput, match="do not sum to 1"):
        ff.validate_mediapipe_embedding(p)
    np.savez(p, lmk_face_idx=np.arange(5), landmark_indices=np.arange(5))
    with pytest.raises(BadInput, match=r"missing keys \['lmk_b_coords'\]"):
        ff.validate_mediapipe_embedding(p)
    np.savez(p, lmk_face_idx=np.arange(5), lmk_b_coords=np.full((5, 3), 1 / 3), landmark_indices=np.arange(5) + 500)
    with pytest.raises(BadInput, match="out of range"):
        ff.validate_mediapipe_embedding(p)


def test_landmark_embedding_with_torch_dynamic_contour(tmp_path):
    rng = np.random.default_rng(1)
    emb = {
        "static_lmk_faces_idx": np.arange(51), "static_lmk_bary_coords": rng.dirichlet([1, 1, 1], 51),
        "dynamic_lmk_faces_idx": torch.arange(79 * 17).view(79, 17),          # DECA stores torch tensors
        "dynamic_lmk_bary_coords": torch.full((79, 17, 3), 1 / 3),
        "full_lmk_faces_idx": np.arange(68)[None], "full_lmk_bary_coords": rng.dirichlet([1, 1, 1], 68)[None],
    }
    p = tmp_path / "landmark_embedding.npy"
    np.save(p, emb, allow_pickle=True)
    assert ff.validate_landmark_embedding(p) == {"landmarks": 68, "max_face": 67, "dynamic_contour": [79, 17]}
    got = ff.read_landmark_embedding(p)
    assert got["face_idx"].shape == (68,) and got["dynamic_bary"].shape == (79, 17, 3)
    del emb["full_lmk_bary_coords"]
    np.save(p, emb, allow_pickle=True)
    with pytest.raises(BadInput, match="missing keys"):
        ff.validate_landmark_embedding(p)
    np.save(p, np.zeros(4))
    with pytest.raises(BadInput, match="expected a 0-d object array"):
        ff.validate_landmark_embedding(p)


def test_texture(tmp_path):
    p = tmp_path / "FLAME_texture.npz"
    np.savez(p, mean=np.zeros((8, 8, 3), np.float32), tex_dir=np.zeros((8, 8, 3, 5), np.float32),
             vt=np.zeros((10, 2)), ft=np.zeros((4, 3), np.int64))
    assert ff.validate_flame_texture(p) == {"size": [8, 8], "components": 5, "uv_layout": True}
    vt, ft = ff.read_texture_uv(p)
    assert vt.shape == (10, 2) and ft.shape == (4, 3)
    np.savez(p, mean=np.zeros((8, 8, 3)), tex_dir=np.zeros((4, 8, 3, 5)))
    with pytest.raises(BadInput, match="expected \\[H,W,3\\] and \\[H,W,3,K\\]"):
        ff.validate_flame_texture(p)
    p.write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="not a readable .npz"):
        ff.validate_flame_texture(p)


def test_embeddings_with_the_upstream_files_dtypes(tmp_path):
    """The dtypes and shapes of the published files (checked on metrical-tracker's
    flame/mediapipe/mediapipe_landmark_embedding.npz and MICA's data/FLAME2020/landmark_embedding.npy):
    uint32 face indices, float64 barycentrics and int64 MediaPipe indices (105 points); a pickled dict
    with int64/float64 ``static_*`` [51], torch ``dynamic_*`` [79,17](,3) and ``full_*`` [1,68] int64 /
    [1,68,3] float32."""
    rng = np.random.default_rng(5)
    mp = tmp_path / "mediapipe_landmark_embedding.npz"
    np.savez(mp, lmk_face_idx=rng.integers(0, 9976, 105).astype(np.uint32),
             lmk_b_coords=rng.dirichlet([1, 1, 1], 105), landmark_indices=rng.choice(468, 105, replace=False))
    emb = ff.read_mediapipe_embedding(mp)
    assert emb["face_idx"].dtype == np.int64 and emb["bary"].dtype == np.float64 and emb["mp_index"].shape == (105,)
    lmk = tmp_path / "landmark_embedding.npy"
    np.save(lmk, np.array({
        "static_lmk_faces_idx": rng.integers(0, 9976, 51), "static_lmk_bary_coords": rng.dirichlet([1, 1, 1], 51),
        "dynamic_lmk_faces_idx": torch.randint(0, 9976, (79, 17)),
        "dynamic_lmk_bary_coords": torch.as_tensor(rng.dirichlet([1, 1, 1], (79, 17)), dtype=torch.float32),
        "full_lmk_faces_idx": rng.integers(0, 9976, (1, 68)),
        "full_lmk_bary_coords": rng.dirichlet([1, 1, 1], (1, 68)).astype(np.float32)}, dtype=object), allow_pickle=True)
    got = ff.read_landmark_embedding(lmk)
    assert got["face_idx"].shape == (68,) and got["bary"].shape == (68, 3)
    assert got["dynamic_face_idx"].shape == (79, 17) and got["dynamic_bary"].shape == (79, 17, 3)
    assert ff.validate_landmark_embedding(lmk)["dynamic_contour"] == [79, 17]
