"""The stand-in face model: same file formats and loader as FLAME, deterministic, plausible."""

import numpy as np
import pytest
import torch

from stages.face import flame_file as ff
from stages.face import standin
from stages.face.flame import FLAME, flame_reference
from stages.face.model import load_face_model
from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return standin.standin_paths(tmp_path_factory.mktemp("cache") / "standin")


@pytest.fixture(scope="module")
def data(paths):
    return load_face_model(paths["flame"], masks=paths["flame-masks"],
                           mediapipe_embedding=paths["mediapipe-embedding"],
                           landmark_embedding=paths["landmark-embedding"])


def test_files_pass_the_asset_validators(paths):
    from stages.assets import kind
    facts = kind("flame").validate(paths["flame"])
    assert facts == {"vertices": 478, "faces": 906, "shape_components": 300, "expression_components": 100,
                     "joints": 5, "version": standin.STANDIN_NAME}
    assert {"face", "lips", "boundary"} <= set(kind("flame-masks").validate(paths["flame-masks"])["regions"])
    assert kind("mediapipe-embedding").validate(paths["mediapipe-embedding"])["landmarks"] == 478
    assert kind("landmark-embedding").validate(paths["landmark-embedding"])["landmarks"] == 68


def test_pickle_uses_chumpy_classes_and_round_trips_exactly(paths):
    raw = paths["flame"].read_bytes()
    assert raw.count(b"cchumpy.ch\nCh\n") == 1
    arrays = standin.standin_arrays()
    loaded = ff.read_flame_arrays(paths["flame"])
    for ours, theirs in (("v_template", "v_template"), ("faces", "faces"), ("shapedirs", "shapedirs"),
                         ("posedirs", "posedirs"), ("J_regressor", "J_regressor"), ("weights", "weights"),
                         ("eyelids", "eyelids"), ("vt", "vt"), ("ft", "ft")):
        np.testing.assert_array_equal(loaded[theirs], arrays[ours], err_msg=ours)
    assert isinstance(ff.load_pickle(paths["flame"])["eyelids"], ff.ChumpyStub)


def test_build_is_deterministic_and_cached(tmp_path, paths):
    again = standin.build_standin(tmp_path / "again")
    for key in paths:
        assert again[key].read_bytes() == paths[key].read_bytes(), key
    mtime = paths["flame"].stat().st_mtime_ns
    assert standin.standin_paths(paths["flame"].parent) == paths          # reused, not rebuilt
    assert paths["flame"].stat().st_mtime_ns == mtime


def test_default_load_is_the_standin(monkeypatch, tmp_path, data):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    default = load_face_model()
    assert default.name == standin.STANDIN_NAME
    np.testing.assert_array_equal(default.v_template, data.v_template)
    assert (tmp_path / "avatar-pipeline" / "standin" / str(standin.STANDIN_VERSION) / "standin_model.pkl").is_file()


def test_topology_and_embeddings(data):
    assert data.v_template.shape == (478, 3) and data.faces.shape == (906, 3)
    height = np.ptp(data.v_template[:, 1])
    assert 0.15 < height < 0.20                                           # metres, like FLAME
    np.testing.assert_allclose(data.lbs_weights.sum(1), 1.0)
    # faces point out of the face (+z) on average
    v, f = data.v_template, data.faces
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert normals[:, 2].sum() > 0
    assert data.mp_index.tolist() == list(range(478))
    model = FLAME(data, dtype=torch.float64)
    out = model(**model.neutral(1))
    np.testing.assert_allclose(out.landmarks_mp[0].numpy(), data.v_template, atol=1e-12)
    lm68 = out.landmarks_68[0].numpy()
    assert lm68[8, 1] == lm68[:, 1].min()                                  # chin lowest
    assert lm68[36, 0] < lm68[39, 0] < lm68[42, 0] < lm68[45, 0]           # eye corners left to right in x
    assert lm68[0, 0] < 0 < lm68[16, 0]                                    # point 0 on the subject's right (-x)


def test_mediapipe_sets_match_mediapipe():
    from mediapipe.python.solutions import face_mesh_connections as conn


    def idx(edges):
        return {i for e in edges for i in e}
    assert idx(conn.FACEMESH_RIGHT_EYE) == set(standin.RIGHT_EYE_UPPER + standin.RIGHT_EYE_LOWER)
    assert idx(conn.FACEMESH_LEFT_EYE) == set(standin.LEFT_EYE_UPPER + standin.LEFT_EYE_LOWER)
    assert idx(conn.FACEMESH_LIPS) == set(standin.LIPS_OUTER_UPPER + standin.LIPS_OUTER_LOWER
                                          + standin.LIPS_INNER_UPPER + standin.LIPS_INNER_LOWER)
    assert idx(conn.FACEMESH_RIGHT_EYEBROW) == set(standin.RIGHT_BROW)
    assert idx(conn.FACEMESH_LEFT_IRIS) == set(standin.LEFT_IRIS[1:])
    assert idx(conn.FACEMESH_RIGHT_IRIS) == set(standin.RIGHT_IRIS[1:])


def _r6(x, y=0.0, z=0.0):
    return matrix_to_rotation_6d(axis_angle_to_matrix(torch.tensor([[x, y, z]], dtype=torch.float64)))


def test_jaw_open_moves_chin_down_not_forehead(data):
    model = FLAME(data, dtype=torch.float64)
    rest = model(**model.neutral(1)).vertices[0]
    opened = model(**dict(model.neutral(1), jaw=_r6(0.25))).vertices[0]
    assert opened[152, 1] < rest[152, 1] - 0.01          # chin (MediaPipe 152) drops > 1 cm
    assert opened[14, 1] < rest[14, 1] - 0.005           # lower inner lip drops
    torch.testing.assert_close(opened[10], rest[10])      # forehead stays
    torch.testing.assert_close(opened[13], rest[13])      # upper inner lip stays
    expr = torch.zeros(1, 100, dtype=torch.float64)
    expr[0, 0] = 1.0                                       # expression 0: mouth open
    e_open = model(**dict(model.neutral(1), expression=expr)).vertices[0]
    assert e_open[14, 1] < rest[14, 1] - 0.005 and e_open[13, 1] >= rest[13, 1]


def test_eyelids_close_and_eyes_rotate(data):
    model = FLAME(data, dtype=torch.float64)
    rest = model(**model.neutral(1)).vertices[0]
    closed = model(**model.neutral(1), eyelids=torch.tensor([[1.0, 0.0]], dtype=torch.float64)).vertices[0]
    gap_rest = rest[386, 1] - rest[374, 1]                 # left eye: upper minus lower lid
    gap_closed = closed[386, 1] - closed[374, 1]
    assert gap_rest > 0.004 and abs(gap_closed) < 0.1 * gap_rest
    assert closed[386, 1] < rest[386, 1] - 0.003          # the upper lid moved down
    torch.testing.assert_close(closed[159], rest[159])     # the right eye (eyelids[:,1]) did not
    # the left iris shrinks when its lid closes
    assert (closed[474] - closed[473]).norm() < 0.2 * (rest[474] - rest[473]).norm()
    # eyes[:, :6] turns joint 3 = the left eye (+x): its iris centre moves, the right one does not
    look = model(**dict(model.neutral(1), eyes=torch.cat([_r6(0.0, 0.3), _r6(0.0)], 1))).vertices[0]
    assert rest[473, 0] > 0 and (look[473] - rest[473]).norm() > 0.002
    torch.testing.assert_close(look[468], rest[468])


def test_smile_and_brows(data):
    model = FLAME(data, dtype=torch.float64)
    rest = model(**model.neutral(1)).vertices[0]

    def with_expr(k):
        e = torch.zeros(1, 100, dtype=torch.float64)
        e[0, k] = 1.0
        return model(**dict(model.neutral(1), expression=e)).vertices[0]
    smile = with_expr(1)
    assert smile[291, 0] > rest[291, 0] and smile[61, 0] < rest[61, 0]     # corners apart
    assert smile[291, 1] > rest[291, 1]                                     # and up
    brows = with_expr(3)
    assert brows[105, 1] > rest[105, 1] + 0.003
    torch.testing.assert_close(brows[159], rest[159])                       # eyes unaffected


def test_identity_directions_are_smooth_and_symmetric(data):
    sd = data.shapedirs
    assert sd.shape == (478, 3, 300)
    rms = np.sqrt((sd ** 2).sum(1).mean(0))
    assert rms[0] > rms[50] > rms[299] > 0
    # symmetric: vertex 33 (right eye corner) mirrors 263 (left)
    np.testing.assert_allclose(sd[33, 0], -sd[263, 0], atol=1e-12)
    np.testing.assert_allclose(sd[33, 1:], sd[263, 1:], atol=1e-12)


def test_forward_equals_reference_on_standin(data):
    model = FLAME(data)
    g = torch.Generator().manual_seed(0)
    p = dict(shape=torch.randn(2, 300, generator=g), expression=torch.randn(2, 100, generator=g) * 0.3,
             jaw=_r6(0.2).float().repeat(2, 1), eyes=torch.cat([_r6(0.1, 0.2), _r6(-0.1, 0.2)], 1).float().repeat(2, 1),
             eyelids=torch.rand(2, 2, generator=g), translation=torch.randn(2, 3, generator=g))
    out = model(**p)
    ref = flame_reference(data, **{k: v.double().numpy() for k, v in p.items()})
    rel = np.abs(out.vertices.double().numpy() - ref["vertices"]).max() / np.abs(ref["vertices"]).max()
    assert rel < 1e-5


def test_batch_4096_on_cpu(data):
    model = FLAME(data)
    with torch.no_grad():
        p = model.neutral(4096)
        p["expression"] = torch.randn(4096, 100)
        out = model(**p)
    assert out.vertices.shape == (4096, 478, 3) and torch.isfinite(out.vertices).all()
