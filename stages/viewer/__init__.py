"""The browser viewer (``avatar view``): the animated avatar as Gaussian splats in viser.

- :mod:`stages.viewer.splats`  posed Gaussians -> viser's splat buffer, packed on the device.
- :mod:`stages.viewer.server`  the viser server: scene, camera, playback, sliders.
"""
