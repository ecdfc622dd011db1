"""The fixed optimisation schedules of calibrate and track: which parameters move, for how many
Adam steps, at which learning rates, with which loss weights.

Every level starts a fresh Adam and decays its learning rates along a half cosine from ``lr`` to
``lr * final_lr_fraction`` (so each level ends converged rather than jittering at full step size).
All frames of a batch take every step together: a level costs ``steps`` optimiser steps whatever
the number of frames.

Track (per shard, default, about 550 steps for the whole shard)::

    rigid       80 steps   rot, t                              landmarks
    landmarks  390 steps   rot, t, exp, jaw, eyes, eyelids     landmarks + temporal + priors
    photo       80 steps   rot, t, exp, jaw, eyes              + photometric (when images are given)

Blinks and winks go into ``eyelids``, per eye (:mod:`stages.tracking.eyelids`): besides the per-eye
lid opening, the landmark and photometric levels penalise the eye closure the expression carries
(``lid_expression``) and draw each eye's lid towards its closure read from the landmarks
(``eyelid_closure``), and track moves the eyelids at the expression's learning rate (``TRACK_LR``).
The photometric level holds the eyelids where the landmarks put them: freed there at that rate, the
colour term pulled one frame of wojtek.mp4 (168) off its landmarks by 35 px.

Calibrate (keyframes, no temporal term)::

    rigid      150 steps   rot, t                              landmarks
    identity   500 steps   + shape, focal, pp, exp, jaw, eyes, eyelids
    appearance 150 steps   albedo, SH only (photometric, when images are given)

(the ``adam`` route; the calibrate stage's default route replaces the rigid and identity levels by
a Levenberg-Marquardt solve, :mod:`stages.tracking.lm`), followed (between identity and
appearance) by up to 1000 float64 L-BFGS iterations on shape and
the per-keyframe parameters (:mod:`stages.tracking.refine`; kept only where it fits clearly better;
it stops early once converged, or after 100 iterations when the landmark term is not falling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PER_FRAME = ("rot", "t", "exp", "jaw", "eyes", "eyelids")


@dataclass(frozen=True)
class Level:
    """One level of a schedule.

    Attributes:
        name: for logs and reports.
        steps: Adam steps.
        free: names of the parameters optimised (per-frame: rot, t, exp, jaw, eyes, eyelids;
            shared: shape, focal, pp, albedo, sh).
        photometric: whether the photometric term is on (only where images are supplied).
    """

    name: str
    steps: int
    free: tuple[str, ...]
    photometric: bool = False


@dataclass
class LossWeights:
    """Weights of the loss terms (each term is a mean over frames; see :mod:`stages.tracking.losses`).

    Attributes:
        landmarks: landmark term (distances in units of the image size).
        photometric: L1 colour term inside the face region.
        smooth_points: temporal term on the acceleration of camera-space landmarks (millimetres).
        smooth_exp: temporal term on expression coefficients.
        smooth_rot: temporal term on the acceleration of the head rotation (its 6D form): the
            landmark noise of single frames otherwise makes the head turn back and forth.
        eyelid_opening: per-eye lid opening term (:mod:`stages.tracking.eyelids`; squared
            difference of scale-free openings, about 0.25 for an open eye).
        lid_expression: the eye closure the expression carries, in eyelid units
            (:func:`stages.tracking.eyelids.lid_expression_loss`): blinks and winks go into
            ``eyelids``, per eye, not into expression coefficients that also shut the lids.
        eyelid_closure: pulls each eye's eyelid parameter towards that eye's closure read from
            the target landmarks (:func:`stages.tracking.eyelids.eye_closure`; squared difference,
            eyelid units), which sets the lids' scale (0 open, 1 shut) where the footage's eye
            shape differs from the model's.
        exp, jaw, eyes, eyelids: priors pulling towards neutral.
        shape: prior on identity coefficients (calibrate).
        focal: prior keeping log(focal) near its starting value (calibrate). At a face crop's
            narrow field of view the landmarks hardly tell focal length from identity and depth
            (a flat valley), so the starting value (metrical-tracker-like, 4.5 x 512 px) is kept
            unless the perspective in the keyframes clearly says otherwise.
    """

    landmarks: float = 1.0
    photometric: float = 1e-4
    smooth_points: float = 6e-8
    smooth_exp: float = 1e-6
    smooth_rot: float = 0.03
    eyelid_opening: float = 3e-3
    lid_expression: float = 1e-4
    eyelid_closure: float = 1e-4
    exp: float = 1e-7
    jaw: float = 1e-5
    eyes: float = 1e-5
    eyelids: float = 1e-6
    shape: float = 1e-9
    focal: float = 1e-4


DEFAULT_LR = {"rot": 1e-2, "t": 2e-3, "exp": 1e-1, "jaw": 1e-2, "eyes": 1e-2, "eyelids": 2e-2,
              "shape": 3e-2, "focal": 1e-2, "pp": 2e-3, "albedo": 2e-2, "sh": 1e-2}
"""Adam learning rates per parameter (rotations 6D; t as (x/z, y/z, log z); focal as log; pp in image sizes)."""


@dataclass
class Schedule:
    """A list of levels plus learning rates.

    Attributes:
        levels: run in order.
        lr: Adam learning rate per parameter name.
        final_lr_fraction: the learning rate at the end of each level, as a fraction of ``lr``.
        betas: Adam's moment decay rates (a short second-moment memory keeps steps at about
            ``lr`` while the gradients shrink near convergence; the fit is full-batch, not noisy).
    """

    levels: list[Level]
    lr: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LR))
    final_lr_fraction: float = 0.02
    betas: tuple[float, float] = (0.9, 0.99)

    def lr_factor(self, step: int, steps: int) -> float:
        """Half-cosine decay from 1 to ``final_lr_fraction`` over a level."""
        if steps <= 1:
            return 1.0
        c = 0.5 * (1.0 + math.cos(math.pi * step / (steps - 1)))
        return self.final_lr_fraction + (1.0 - self.final_lr_fraction) * c

    @property
    def total_steps(self) -> int:
        return sum(level.steps for level in self.levels)


TRACK_LR = {**DEFAULT_LR, "eyelids": 1e-1}
"""Track's learning rates: the eyelids move as fast as the expression, so a blink (a few frames)
and the tiny preset's 120 landmark steps still reach a shut lid."""


def track_schedule(rigid: int = 80, landmarks: int = 390, photometric: int = 80) -> Schedule:
    """The track schedule (see the module docstring); a level with 0 steps is left out."""
    levels = [Level("rigid", rigid, ("rot", "t")), Level("landmarks", landmarks, PER_FRAME),
              Level("photometric", photometric, tuple(n for n in PER_FRAME if n != "eyelids"), photometric=True)]
    return Schedule([lv for lv in levels if lv.steps > 0], lr=dict(TRACK_LR))


def calibrate_schedule(rigid: int = 150, identity: int = 500, appearance: int = 150) -> Schedule:
    """The calibrate schedule (see the module docstring); a level with 0 steps is left out."""
    levels = [Level("rigid", rigid, ("rot", "t")),
              Level("identity", identity, PER_FRAME + ("shape", "focal", "pp")),
              Level("appearance", appearance, ("albedo", "sh"), photometric=True)]
    return Schedule([lv for lv in levels if lv.steps > 0])
