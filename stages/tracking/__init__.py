"""The batched FLAME tracker behind the calibrate, track and assemble stages.

Modules (import them directly):

- :mod:`stages.tracking.params`       per-frame parameters, intrinsics, projection
- :mod:`stages.tracking.regions`      MediaPipe landmark index sets by face region
- :mod:`stages.tracking.losses`       landmark, temporal, prior and photometric terms
- :mod:`stages.tracking.schedule`     the fixed optimisation schedules and loss weights
- :mod:`stages.tracking.fit`          the batched Adam optimiser (all frames per step)
- :mod:`stages.tracking.photometric`  SH-lit per-vertex albedo rendered through the rasteriser
- :mod:`stages.tracking.calibration`  identity / focal / principal point / appearance; its file
- :mod:`stages.tracking.keyframes`    automatic keyframe choice
- :mod:`stages.tracking.sequence`     tracking a run of frames in (overlapping) batches
- :mod:`stages.tracking.smoothing`    filling failed frames, cross-fading overlaps
- :mod:`stages.tracking.join`         joining the per-shard results
- :mod:`stages.tracking.overlay`      diagnostic overlay video
- :mod:`stages.tracking.face_assets`  the face model a stage uses (user's FLAME or the stand-in)
- :mod:`stages.tracking.stage_io`     reading landmarks and frames from upstream stages
"""
