"""The viewer's server side without a browser: what the GUI state poses and what is sent."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

pytest.importorskip("viser", reason="viser is in the viewer extra (pip install -e '.[viewer]')")

from stages.export.motion import motion_condition  # noqa: E402
from stages.motion.format import Motion  # noqa: E402
from stages.export.pose import pose_gaussians  # noqa: E402
from stages.gauss.surface import neutral_condition  # noqa: E402
from stages.viewer.server import JAW, AvatarViewer, ViewerConfig, jaw_with_offset  # noqa: E402
from stages.viewer.splats import rotmat_to_wxyz  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gui_state_poses_the_avatar_and_sends_it(toy_avatar):
    model, surface, tracked = toy_avatar
    T = 3
    motion = Motion(exp=np.linspace(-1, 1, T * 100, dtype=np.float32).reshape(T, 100),
                    jaw=np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (T, 1)),
                    eyes=np.tile(np.array([1, 0, 0, 0, 1, 0] * 2, np.float32), (T, 1)),
                    eyelids=np.zeros((T, 2), np.float32))
    v = AvatarViewer(model, surface, tracked, motion, ViewerConfig(port=_port(), scale=10.0))
    try:
        assert v.server.get_host() == "127.0.0.1" and v.url.startswith("http://127.0.0.1:")
        # tracked frame 4 with head motion: the node carries the head pose relative to frame 0's camera
        v.source.value = "tracked"
        v.frame.value = 4
        v.refresh()
        g = pose_gaussians(v.model, v.surface, motion_condition(tracked)[4:5])
        np.testing.assert_allclose(v.splats.buffer[:, :3].view(np.float32), g.means[0].numpy() * 10.0, atol=1e-5)
        rel = tracked.R[0].T.astype(np.float64) @ tracked.R[4]
        q = rotmat_to_wxyz(rel)
        assert min(np.abs(v.splats.wxyz - q).max(), np.abs(v.splats.wxyz + q).max()) < 1e-6
        np.testing.assert_allclose(v.splats.position, 10.0 * tracked.R[0].T @ (tracked.t[4] - tracked.t[0]), atol=1e-5)
        # the motion file, frame 2, with the jaw and first expression sliders added
        v.source.value = "motion file"
        v.frame.value = 2
        v.jaw.value = 0.3
        v.exps[0].value = 1.5
        want = motion_condition(motion)[2:3].clone()
        want[:, JAW] = jaw_with_offset(want[:, JAW], 0.3)
        want[:, 0] += 1.5
        assert torch.allclose(v.condition(), want, atol=1e-6)
        assert v._dirty  # the sliders' callbacks asked for a refresh
        n = v.updates
        v.step(0.0, {})
        assert v.updates == n + 1 and not v._dirty
        # the neutral face ignores the frame; without a camera in the motion the head stays put
        v.neutral.value = True
        v.jaw.value = 0.0
        v.exps[0].value = 0.0
        assert torch.allclose(v.condition(), neutral_condition(1), atol=1e-6)
        v.refresh()
        np.testing.assert_allclose(v.splats.position, 0.0, atol=1e-6)
    finally:
        v.close()
