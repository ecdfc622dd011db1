"""Synthetic ground-truth videos: plausible motion, deterministic, decodable, landmarks on the face."""

import numpy as np
import pytest
import torch

from stages.face.model import load_face_model
from stages.face.rotation import rotation_6d_to_matrix
from stages.face.synth import SynthSpec, generate_params, render_video


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from stages.face.standin import standin_paths
    p = standin_paths(tmp_path_factory.mktemp("cache") / "standin")
    return load_face_model(p["flame"], masks=p["flame-masks"], mediapipe_embedding=p["mediapipe-embedding"],
                           landmark_embedding=p["landmark-embedding"])


def test_spec_limits():
    with pytest.raises(ValueError, match="yaw_deg"):
        SynthSpec(yaw_deg=60)
    with pytest.raises(ValueError):
        SynthSpec(n_frames=0)


def test_params_are_deterministic_and_shaped(data):
    spec = SynthSpec(n_frames=30, seed=4)
    a, b = generate_params(data, spec), generate_params(data, spec)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    c = generate_params(data, SynthSpec(n_frames=30, seed=5))
    assert not np.array_equal(a["shape"], c["shape"])
    assert a["shape"].shape == (30, 300) and a["expression"].shape == (30, 100)
    assert a["K"].shape == (30, 3, 3) and a["R"].shape == (30, 3, 3) and a["t"].shape == (30, 3)
    assert (a["shape"] == a["shape"][0]).all()                              # one identity
    ident = np.array([1, 0, 0, 0, 1, 0], np.float32)
    assert (a["rotation"] == ident).all() and (a["neck"] == ident).all()   # head pose in extrinsics
    R = torch.as_tensor(a["R"], dtype=torch.float64)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(30, 3, 3),
                               atol=1e-5, rtol=0)


def test_blink_at_adds_blinks_and_changes_nothing_else(data):
    """``blink_at`` shuts both eyes at the given times (one frame nearly shut, the lids open again within
    0.16 s) and leaves every other parameter, and the seed's own blinks, as they were."""
    plain = generate_params(data, SynthSpec(n_frames=48, seed=1))
    more = generate_params(data, SynthSpec(n_frames=48, seed=1, blink_at=(0.5, 1.2)))
    for key in plain:
        if key != "eyelids":
            np.testing.assert_array_equal(plain[key], more[key], err_msg=key)
    assert plain["eyelids"].max() == 0.0  # seed 1's first blink comes after 48 frames
    lids = more["eyelids"]
    np.testing.assert_array_equal(lids[:, 0], lids[:, 1])  # both eyes
    shut = np.flatnonzero(lids[:, 0] > 0.6)
    assert shut.tolist() == [14, 15, 32], shut  # 0.56 and 0.60 s (0.85 shut), 1.28 s (fully shut); 25 fps
    assert lids[32, 0] > 0.99 and (lids[:13] == 0).all() and (lids[17:31] == 0).all() and (lids[34:] == 0).all()


def test_motion_statistics(data):
    spec = SynthSpec(n_frames=25 * 40, seed=2, yaw_deg=40)
    p = generate_params(data, spec)
    yaw = np.rad2deg(p["head_pose"][:, 0])
    assert np.abs(yaw).max() <= 40 + 1e-3 and np.ptp(yaw) > 15
    assert np.abs(np.diff(yaw)).max() < 3.0                               # smooth: < 3 degrees per frame
    # blinks: every 3-5 s, ~150 ms long, fully closing
    closed = p["eyelids"][:, 0] > 0.5
    starts = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
    gaps = np.diff(starts) / spec.fps
    assert 7 <= len(starts) <= 14 and gaps.min() > 2.5 and gaps.max() < 5.5
    assert p["eyelids"].max() > 0.85
    lengths = [np.argmax(~closed[s:]) for s in starts[:-1]]
    assert max(lengths) <= 4                                              # <= 160 ms above half-closed
    # talking: jaw angle oscillates at 3-5 Hz
    jaw = rotation_6d_to_matrix(torch.as_tensor(p["jaw"], dtype=torch.float64))
    angle = torch.atan2(jaw[:, 2, 1], jaw[:, 2, 2]).numpy()
    spectrum = np.abs(np.fft.rfft(angle - angle.mean()))
    freqs = np.fft.rfftfreq(len(angle), 1 / spec.fps)
    assert 2.5 <= freqs[spectrum.argmax()] <= 5.5
    quiet = generate_params(data, SynthSpec(n_frames=100, seed=2, talking=False, blinks=False))
    assert quiet["eyelids"].max() == 0 and np.ptp(quiet["jaw"], axis=0).max() < 1e-6


def test_render_decode_and_landmarks(data, tmp_path):
    import av

    spec = SynthSpec(n_frames=10, size=128, seed=1)
    params = generate_params(data, spec)
    summary = render_video(data, params, tmp_path / "video.mp4", batch=4, spec=spec)
    assert summary["frames"] == 10 and summary["npz"] == str(tmp_path / "video.npz")
    with av.open(str(tmp_path / "video.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (128, 128, 3)
    gt = np.load(tmp_path / "video.npz")
    lm = gt["landmarks478"]
    assert lm.shape == (10, 478, 2) and np.isfinite(lm).all()
    assert (lm > 0).all() and (lm < 128).all()
    assert gt["landmarks68"].shape == (10, 68, 2)
    np.testing.assert_array_equal(gt["expression"], params["expression"])
    assert '"n_frames": 10' in str(gt["spec_json"])
    bg = np.array([0.32, 0.38, 0.44]) * 255
    for i in (0, 9):
        img = frames[i].astype(float)
        # the nose tip (MediaPipe 1) is drawn face, a corner is background
        x, y = gt["landmarks478"][i, 1].astype(int)
        assert np.abs(img[y, x] - bg).sum() > 60
        assert np.abs(img[2, 2] - bg).sum() < 20
        # the face covers a sensible part of the frame
        face = np.abs(img - bg).sum(-1) > 40
        assert 0.1 < face.mean() < 0.6
    again = render_video(data, params, tmp_path / "again.mp4", batch=10)
    assert (tmp_path / "again.mp4").read_bytes() == (tmp_path / "video.mp4").read_bytes()
    assert again["frames"] == 10


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_render_matches_cpu(data):
    from stages.face.flame import FLAME
    from stages.face.synth import albedo_texture, render_frames

    params = generate_params(data, SynthSpec(n_frames=4, size=256, seed=3))
    texture = torch.as_tensor(albedo_texture(data, 256)).permute(2, 0, 1).contiguous()
    cpu = render_frames(FLAME(data), data, params, 0, 4, texture)
    gpu = render_frames(FLAME(data).cuda(), data, params, 0, 4, texture.cuda()).cpu()
    diff = (cpu.float() - gpu.float()).abs()
    assert diff.mean() < 1.0 and (diff > 8).float().mean() < 0.01   # same picture up to edge pixels
