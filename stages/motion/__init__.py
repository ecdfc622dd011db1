"""FLAME motion: the per-frame parameters that drive an avatar, as a file format and as transfers.

- :mod:`stages.motion.format`    :class:`Motion`, :func:`load_motion` (our ``motion.npz``, a FLAME
  ``.npz`` from a speech-to-motion model or a face tracker, a folder of metrical-tracker ``.frame``
  files), :func:`save_motion`; resampling to 25 fps. Described in ``docs/motion-format.md``.
- :mod:`stages.motion.transfer`  driver -> actor: expression (relative/absolute) and head pose
  (relative/actor/fixed).
"""

from stages.motion.format import FPS, Motion, load_motion, save_motion

__all__ = ["FPS", "Motion", "load_motion", "save_motion"]
