"""The face-model layer: FLAME files, the FLAME module, rotations, cameras, stand-in, synthetic video.

Modules (import them directly; the names below are also re-exported lazily, so importing
``stages.face`` does not import torch):

- :mod:`stages.face.rotation`   6D / axis-angle / matrix conversions (PyTorch3D's 6D convention)
- :mod:`stages.face.camera`     OpenCV projection; metrical-tracker's PyTorch3D camera fields
- :mod:`stages.face.flame_file` chumpy-free FLAME pickle loading, asset validators, writers
- :mod:`stages.face.model`      :class:`FaceModelData`, :func:`load_face_model`
- :mod:`stages.face.flame`      :class:`FLAME` (nn.Module), :class:`FlameOutput`, :func:`flame_reference`
- :mod:`stages.face.standin`    licence-free stand-in model in FLAME's file formats
- :mod:`stages.face.synth`      synthetic ground-truth talking-head videos
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FaceModelData": "stages.face.model",
    "load_face_model": "stages.face.model",
    "FLAME": "stages.face.flame",
    "FlameOutput": "stages.face.flame",
    "flame_reference": "stages.face.flame",
    "rotation_6d_to_matrix": "stages.face.rotation",
    "matrix_to_rotation_6d": "stages.face.rotation",
    "axis_angle_to_matrix": "stages.face.rotation",
    "matrix_to_axis_angle": "stages.face.rotation",
    "identity_6d": "stages.face.rotation",
    "project": "stages.face.camera",
    "intrinsics": "stages.face.camera",
    "Pytorch3dCamera": "stages.face.camera",
    "opencv_to_pytorch3d": "stages.face.camera",
    "pytorch3d_to_opencv": "stages.face.camera",
    "build_standin": "stages.face.standin",
    "standin_paths": "stages.face.standin",
    "SynthSpec": "stages.face.synth",
    "generate_params": "stages.face.synth",
    "render_video": "stages.face.synth",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stages.face' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
