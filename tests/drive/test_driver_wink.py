"""A driver video that winks, end to end: ``avatar drive --video`` runs the driver through ingest,
landmarks (MediaPipe on the rendered frames), calibrate and track (tiny preset), and the drive's
``motion.npz`` closes the winking eye's lid alone, each eye in turn, where the synthetic clip's
ground truth (:mod:`stages.face.synth`) winks, and its expression carries no eye closure (measured:
eyelids r 0.972 / 0.973 with the truth, the winking eye 0.71 / 0.77, the other -0.02 / -0.01; before
the eyelid terms the worse eye's r was 0.78, the blink living in expression 2)."""

from __future__ import annotations

import numpy as np

from stages.cli import main

WINKS = ((0.4, 0.4, 0), (1.6, 0.4, 1))  # (start s, held s, eye): the subject's left eye, then the right


def _wink_clip(path, frames: int = 64):  # noqa: ANN001
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params, render_video

    model = load_face_model(None)
    spec = SynthSpec(n_frames=frames, size=256, seed=3, blinks=False, winks=WINKS, yaw_deg=10.0)
    params = generate_params(model, spec)
    render_video(model, params, path, spec=spec, batch=16)
    return params


def test_a_driver_videos_wink_reaches_the_motion_per_eye(toy_actor, tmp_path):
    from stages.config import CONFIG_FILE, PipelineConfig
    from stages.face.flame import FLAME
    from stages.face.model import load_face_model
    from stages.tracking.eyelids import lid_expression_basis
    from stages.motion.format import load_motion
    from stages.runner.context import actor_key
    from stages.store.local import LocalStore

    store, actor, _ = toy_actor
    LocalStore(store).put_json(actor_key(actor, CONFIG_FILE), PipelineConfig(preset="tiny").to_dict())
    truth = _wink_clip(tmp_path / "wink.mp4")
    assert main(["drive", "--actor", actor, "--video", str(tmp_path / "wink.mp4"), "--name", "wink", "--store",
                 str(store), "--device", "cpu", "--jobs", "1", "--resolution", "64", "--transfer", "absolute"]) == 0
    motion = load_motion(store / "actors" / actor / "drive" / "wink" / "motion.npz")
    lids, gt = motion.eyelids, truth["eyelids"]
    assert lids.shape == gt.shape
    r = [float(np.corrcoef(lids[:, e], gt[:, e])[0, 1]) for e in (0, 1)]
    rows = []
    for eye in (0, 1):
        shut = (gt[:, eye] > 0.99) & (gt[:, 1 - eye] < 0.01)
        rows.append((lids[shut, eye].mean(), lids[shut, 1 - eye].mean()))
    open_ = gt.max(1) < 0.01
    # the eye closure the expression carries (stages.tracking.eyelids.lid_expression_basis)
    carried = motion.exp @ lid_expression_basis(FLAME(load_face_model(None))).numpy().T
    print(f"driver wink: eyelids r {np.round(r, 3).tolist()} with the truth per eye; while one eye is shut "
          f"(winking, other): {np.round(rows, 3).tolist()}; both open: {lids[open_].mean(0).round(3).tolist()}; "
          f"eye closure in the expression at most {np.abs(carried).max():.3f}")
    assert min(r) >= 0.9, r
    for winking, other in rows:
        assert winking > 0.5 and abs(other) < 0.15, rows
    assert np.abs(lids[open_]).max() < 0.25
    assert np.abs(carried).max() < 0.1
