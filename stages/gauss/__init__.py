"""Gaussian head avatar (our own implementation of FlashAvatar's method).

Modules, one job each:

- :mod:`stages.gauss.sh`: real spherical harmonics (degrees 0-3) to RGB.
- :mod:`stages.gauss.render_ref`: pure-torch reference rasteriser (EWA splatting, CPU-friendly).
- :mod:`stages.gauss.render_gsplat`: the same contract on CUDA through ``gsplat.rasterization``.
- :mod:`stages.gauss.sampling`: where Gaussians sit on the face-model surface (UV texels or area).
- :mod:`stages.gauss.model`: :class:`~stages.gauss.model.GaussianAvatar` (surface-bound Gaussians + offset MLP).
- :mod:`stages.gauss.surface`: the face model seen as a deforming triangle mesh.
- :mod:`stages.gauss.data`: the FlashAvatar dataset layout as a torch ``Dataset`` + step sampler.
- :mod:`stages.gauss.losses`, :mod:`stages.gauss.metrics`: Huber losses; PSNR and SSIM.
- :mod:`stages.gauss.checkpoint`: atomic training checkpoints and the final avatar file.
- :mod:`stages.gauss.trainer`: the training loop (batched, resumable, deterministic on CPU).
- :mod:`stages.gauss.evaluate`: held-out PSNR/SSIM and render speed (the render stage's core).
- :mod:`stages.gauss.preview`: side-by-side H.264 preview video.
- :mod:`stages.gauss.synthetic`: a toy deforming face and a synthetic dataset (tests, benchmarks).
"""
