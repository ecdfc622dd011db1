"""``avatar view``: a local viser server showing the animated avatar as Gaussian splats.

The scene is the face model's space scaled by ``scale`` (see :mod:`stages.viewer.splats`). The
browser's initial camera is tracked frame 0's camera (position, orientation, field of view), so the
first picture is the training view; orbit with the mouse. Playback poses the avatar with each frame's
expression, jaw, eyes and eyelids; with "head motion" on, the head also moves as it did relative to
frame 0's camera (a rigid transform of the splat node, exact for a camera that stays at frame 0's
place). The jaw and expression sliders add to the frame's values (at the neutral face they are the
values). Colours are the SH colours seen from the current frame's camera.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from stages.export.motion import motion_condition
from stages.motion.format import Motion
from stages.export.pose import camera_center, pose_gaussians
from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d, rotation_6d_to_matrix
from stages.gauss.model import GaussianAvatar
from stages.gauss.surface import EXPRESSION_DIM, FaceSurface, neutral_condition
from stages.viewer.splats import pack_splats, rotmat_to_wxyz, splat_colors

log = logging.getLogger("avatar.view")

JAW = slice(EXPRESSION_DIM, EXPRESSION_DIM + 6)


@dataclass
class ViewerConfig:
    """Attributes:
        host: address to bind (127.0.0.1: this machine only).  port: TCP port (viser takes the next
        free one when busy).  scale: scene units per metre.  expressions: expression sliders shown.
        fps: playback rate.  device: where the avatar is posed.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    scale: float = 10.0
    expressions: int = 5
    fps: float = 25.0
    device: str = "cpu"


def jaw_with_offset(jaw6d: torch.Tensor, angle: float) -> torch.Tensor:
    """The jaw rotation [..., 6] (6D) opened further by ``angle`` radians about the x axis."""
    R = rotation_6d_to_matrix(jaw6d)
    Rx = axis_angle_to_matrix(torch.tensor([angle, 0.0, 0.0], dtype=jaw6d.dtype, device=jaw6d.device))
    return matrix_to_rotation_6d(Rx @ R)


class AvatarViewer:
    """The viewer: a viser server, its GUI and the posing loop.

    Args:
        model, surface: the avatar and its face model.
        tracked: the actor's tracked sequence (cameras; the default motion).
        motion: another motion to play instead (its own cameras, when it has them, move the head).
        config: :class:`ViewerConfig`.
    """

    def __init__(self, model: GaussianAvatar, surface: FaceSurface, tracked: Motion,
                 motion: Motion | None = None, config: ViewerConfig | None = None):
        import viser

        self.cfg = cfg = config or ViewerConfig()
        self.device = cfg.device
        self.model = model.to(cfg.device).eval()
        self.surface = surface.to(cfg.device)
        self.tracked = tracked
        self.sources = {"tracked": tracked, **({"motion file": motion} if motion is not None else {})}
        self._conds = {k: motion_condition(m).to(cfg.device) for k, m in self.sources.items()}
        self._lock = threading.RLock()
        self._dirty = True
        self.updates = 0
        R0, t0 = np.asarray(tracked.R[0], np.float64), np.asarray(tracked.t[0], np.float64)
        self._R0, self._t0 = R0, t0

        self.server = viser.ViserServer(host=cfg.host, port=cfg.port, verbose=False)
        s = cfg.scale
        up = -R0.T @ np.array([0.0, 1.0, 0.0])  # OpenCV y points down
        eye = -R0.T @ t0
        with torch.no_grad():
            g0 = pose_gaussians(self.model, self.surface, neutral_condition(1, cfg.device))
        center = g0.means[0].mean(0).cpu().double().numpy()
        self.server.scene.set_up_direction(tuple(float(v) for v in up))
        K = np.asarray(tracked.K if np.ndim(tracked.K) == 2 else tracked.K[0], np.float64)
        fov = 2 * np.arctan(0.5 * int(np.asarray(tracked.image_size).reshape(-1)[0]) / K[1, 1])
        cam = self.server.initial_camera
        cam.position, cam.look_at, cam.up, cam.fov = tuple(eye * s), tuple(center * s), tuple(up), float(fov)
        self.splats = self.server.scene.add_gaussian_splats(
            "/avatar", centers=np.zeros((1, 3), np.float32), covariances=np.eye(3, dtype=np.float32)[None] * 1e-4,
            rgbs=np.zeros((1, 3), np.float32), opacities=np.zeros((1, 1), np.float32))
        self._build_gui()
        self.refresh()

    # -- GUI ------------------------------------------------------------------------------------

    def _build_gui(self) -> None:
        gui = self.server.gui
        n = len(self.tracked)
        with gui.add_folder("Playback"):
            self.source = gui.add_dropdown("Source", tuple(self.sources), initial_value=tuple(self.sources)[-1])
            self.frame = gui.add_slider("Frame", min=0, max=max(1, self._frames() - 1), step=1, initial_value=0)
            self.playing = gui.add_checkbox("Play", initial_value=False)
            self.head_motion = gui.add_checkbox("Head motion", initial_value=True)
            self.neutral = gui.add_checkbox("Neutral face", initial_value=False)
        with gui.add_folder("Face"):
            self.jaw = gui.add_slider("Jaw open (rad)", min=-0.2, max=0.6, step=0.01, initial_value=0.0)
            self.exps = [gui.add_slider(f"Expression {i}", min=-3.0, max=3.0, step=0.05, initial_value=0.0)
                         for i in range(self.cfg.expressions)]
            reset = gui.add_button("Reset sliders")
        self.info = gui.add_markdown(f"{self.model.num_gaussians} Gaussians, {n} tracked frames")

        def changed(_event=None) -> None:
            self._dirty = True

        def source_changed(_event=None) -> None:
            self.frame.max = max(1, self._frames() - 1)
            self.frame.value = min(self.frame.value, self._frames() - 1)
            self._dirty = True

        def do_reset(_event=None) -> None:
            with self.server.atomic():
                self.jaw.value = 0.0
                for e in self.exps:
                    e.value = 0.0
            self._dirty = True

        for h in (self.frame, self.head_motion, self.neutral, self.jaw, *self.exps):
            h.on_update(changed)
        self.source.on_update(source_changed)
        reset.on_click(do_reset)

    def _frames(self) -> int:
        return len(self.sources[self.source.value])

    # -- state -> splats ------------------------------------------------------------------------

    def condition(self) -> torch.Tensor:
        """[1, 120] the condition the GUI asks for."""
        if self.neutral.value:
            cond = neutral_condition(1, self.device)
        else:
            conds = self._conds[self.source.value]
            cond = conds[min(int(self.frame.value), len(conds) - 1)].clone()[None]
        cond[:, JAW] = jaw_with_offset(cond[:, JAW], float(self.jaw.value))
        for i, e in enumerate(self.exps):
            cond[:, i] += float(e.value)
        return cond

    def _camera(self) -> tuple[np.ndarray, np.ndarray]:
        """The current frame's OpenCV extrinsics (frame 0's without head motion)."""
        m = self.sources[self.source.value]
        k = int(self.frame.value)
        if self.head_motion.value and not self.neutral.value and m.R is not None and k < len(m.R):
            return np.asarray(m.R[k], np.float64), np.asarray(m.t[k], np.float64)
        return self._R0, self._t0

    @torch.no_grad()
    def refresh(self) -> float:
        """Pose the avatar for the GUI state and push it to the browsers; returns the seconds it took."""
        t0 = time.perf_counter()
        with self._lock:
            self._dirty = False
            cond = self.condition()
            R, t = self._camera()
            g = pose_gaussians(self.model, self.surface, cond)
            eye = camera_center(torch.as_tensor(R, dtype=torch.float32), torch.as_tensor(t, dtype=torch.float32))
            rgb = splat_colors(g.sh, g.sh_degree, g.means[0], eye.to(self.device))
            buf = pack_splats(g.means[0], g.quats[0], g.scales[0], g.opacities, rgb, self.cfg.scale)
            # x_cam = R_k x + t_k seen by camera 0: x_world = R0ᵀ (R_k x + t_k - t0)
            rel = self._R0.T @ R
            with self.server.atomic():
                self.splats.buffer = buf
                self.splats.wxyz = rotmat_to_wxyz(rel)
                self.splats.position = tuple(self.cfg.scale * (self._R0.T @ (t - self._t0)))
            self.updates += 1
        return time.perf_counter() - t0

    @property
    def url(self) -> str:
        host = self.server.get_host()
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.server.get_port()}/"

    def step(self, now: float, state: dict) -> None:
        """One turn of the loop: advance playback by wall-clock time, refresh when something changed."""
        if self.playing.value:
            if state.get("t") is None:
                state["t"], state["f"] = now, int(self.frame.value)
            k = (state["f"] + int((now - state["t"]) * self.cfg.fps)) % max(1, self._frames())
            if k != self.frame.value:
                self.frame.value = k
                self._dirty = True
        else:
            state["t"] = None
        if self._dirty:
            self.refresh()

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set (or Ctrl-C)."""
        stop = stop or threading.Event()
        state: dict = {}
        t_log, n_log = time.monotonic(), self.updates
        while not stop.is_set():
            now = time.monotonic()
            self.step(now, state)
            if now - t_log >= 10.0:
                if self.updates > n_log:
                    log.info("%d updates in %.0f s (%.1f frames/s posed and sent)", self.updates - n_log, now - t_log,
                             (self.updates - n_log) / (now - t_log))
                t_log, n_log = now, self.updates
            time.sleep(0.25 / self.cfg.fps)

    def close(self) -> None:
        self.server.stop()
