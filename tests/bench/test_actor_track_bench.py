"""bench/actor_track_bench.py's scoring: a track equal to the ground truth scores zero error, a track off
by a known rotation scores that angle, and a scale/depth trade-off (focal and distance together) is
removed by the sequence's similarity alignment, as the landmarks in the crop's pixels show it."""

from __future__ import annotations


import numpy as np
import torch

from bench_script import load_bench

def _bench():
    return load_bench("actor_track_bench")


def _case(n: int = 12):
    from stages.face.camera import project
    from stages.face.flame import FLAME
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params

    data = load_face_model(None)
    model = FLAME(data)
    gt = generate_params(data, SynthSpec(n_frames=n, size=256, seed=4))
    with torch.no_grad():
        out = model(*(torch.as_tensor(gt[k]) for k in ("shape", "expression", "jaw", "eyes")),
                    eyelids=torch.as_tensor(gt["eyelids"]))
        gt["landmarks_mp"] = project(out.landmarks_mp, *(torch.as_tensor(gt[k]) for k in ("K", "R", "t")))[0].numpy()
    # ingest's crop: source pixels (x0, y0) .. (x0 + side) scaled to out_size
    crop = {"x0": 20, "y0": -10, "side": 200, "out_size": 256}
    s = crop["out_size"] / crop["side"]
    K = gt["K"][0]
    track = {"frames": np.arange(1, n + 1), "core": np.ones(n, bool), "error_px": np.full(n, 0.5, np.float32),
             "exp": gt["expression"].copy(), "jaw": gt["jaw"].copy(), "eyes": gt["eyes"].copy(),
             "eyelids": gt["eyelids"].copy(), "R": gt["R"].copy(), "t": gt["t"].copy(),
             "focal": np.array([K[0, 0], K[1, 1]]) * s,
             "pp": (np.array([K[0, 2], K[1, 2]]) - [crop["x0"], crop["y0"]]) * s}
    return model, gt, track, {"shape": gt["shape"][0]}, crop


def test_the_truth_scores_zero():
    b = _bench()
    model, gt, track, calib, crop = _case()
    r, per_frame = b.score(model, gt, track, calib, crop)
    assert r["frames"] == 12 and r["lm_fit_px"] == 0.5
    assert r["vertex_mm"]["mean"] < 1e-2 and abs(r["vertex_mm"]["similarity_scale"] - 1) < 1e-4
    assert r["lm_true_px"]["max"] < 1e-2 and r["vertex_px"]["p95"] < 1e-2 and abs(r["depth_ratio"] - 1) < 1e-6
    assert r["rot_deg"]["mean"] < 0.05 and r["motion_error_mm"] < 1e-3 and r["identity_mm"] < 1e-3
    assert r["jaw_r"] > 0.999
    assert per_frame["frames"].tolist() == list(range(12)) and per_frame["mesh_src"].shape[:2] == (12, model.n_vertices)


def test_rotation_offset_and_depth_scale():
    b = _bench()
    from stages.face.rotation import axis_angle_to_matrix

    model, gt, track, calib, crop = _case()
    off = axis_angle_to_matrix(torch.tensor([[0.0, np.radians(2.0), 0.0]], dtype=torch.float64))[0].numpy()
    turned = dict(track, R=np.einsum("ij,njk->nik", off, track["R"]).astype(np.float32))
    r = b.score(model, gt, turned, calib, crop)[0]
    assert abs(r["rot_deg"]["mean"] - 2.0) < 0.05 and r["rot_deg"]["relative_mean"] < 0.05  # a constant offset
    assert r["lm_true_px"]["median"] > 1.0  # the turn moves the projected points
    # twice the distance and twice the focal length: the same pixels, a mesh that aligns by one similarity
    far = dict(track, t=track["t"] * 2, focal=track["focal"] * 2)
    far["R"] = track["R"]
    r = b.score(model, gt, far, calib, crop)[0]
    assert r["lm_true_px"]["max"] > 1.0 and r["vertex_px"]["mean"] > 1.0  # scaling t moves the projection ...
    assert abs(r["depth_ratio"] - 2) < 1e-6
    scaled = b.posed(model, calib["shape"], {"exp": track["exp"], "jaw": track["jaw"], "eyes": track["eyes"],
                                             "eyelids": track["eyelids"]}, track["R"], track["t"])[0]
    s, R, t = b.similarity(scaled * 2.0 + 0.01, scaled)  # ... but a similarity is undone exactly
    assert abs(s - 0.5) < 1e-6 and np.allclose(R, np.eye(3), atol=1e-6) and np.allclose(t, -0.005, atol=1e-6)
