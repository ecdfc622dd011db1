"""``avatar drive``: a trained avatar driven by another person's video or by a FLAME motion file.

- :mod:`stages.drive.sources` the driver (its own store entry ``drivers/<name>/``, tracked by the
  ``drive`` pipeline of :mod:`stages.graph`) and the actor (avatar, neutral, cameras) as read from a store
- :mod:`stages.drive.render`  batched rendering to per-frame RGB + alpha
- :mod:`stages.drive.stage`   the drive step: transfer, render, encode, mux, write ``actors/<a>/drive/<name>/``
"""
