"""Using a trained avatar outside the project: standard 3DGS PLY files (one frame, the neutral face,
a sequence) and the rigged bundle (docs/export-format.md).

- :mod:`stages.export.pose`    the avatar's Gaussians for given conditions, in world coordinates.
- :mod:`stages.export.ply`     3DGS PLY write/read (the conventions every 3DGS viewer uses).
- :mod:`stages.export.motion`  the per-frame parameters that pose it (tracked sequence or motion file).
- :mod:`stages.export.actor`   an actor's avatar, face model and tracking from a store.
- :mod:`stages.export.bundle`  the rigged avatar bundle (``avatar-bundle/2``; ``/1`` without triangle scaling).
"""
