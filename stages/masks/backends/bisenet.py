"""19-class BiSeNet face parsing through onnxruntime (zllrunning/face-parsing.PyTorch classes).

Classes: 0 background, 1 skin, 2 l_brow, 3 r_brow, 4 l_eye, 5 r_eye, 6 eyeglasses, 7 l_ear,
8 r_ear, 9 earring, 10 nose, 11 mouth (inner), 12 u_lip, 13 l_lip, 14 neck, 15 necklace,
16 cloth, 17 hair, 18 hat. Defaults (configurable in the masks stage's Config): neckhead = 1-15
and 17 (everything but background, cloth and hat); mouth = 11 (the opening; FlashAvatar weights
this region 40x, so lips are left out by default).

Where the ``onnx`` package is installed, normalisation and argmax run inside the graph
(:func:`stages.masks.onnx_models.prepare_bisenet`): uint8 frames go in, uint8 labels come out.
:meth:`BiSeNetParsing.labels_reference` normalises and takes the argmax on the host from the
logits; tests compare both.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from stages.masks.onnx_models import FLOAT_TYPES, U8_INPUT, open_session, prepare_bisenet

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
NECKHEAD_CLASSES = tuple(range(1, 16)) + (17,)
MOUTH_CLASSES = (11,)


def class_lut(classes: Iterable[int]) -> np.ndarray:
    """uint8 [256] lookup table: 255 for the listed classes, 0 otherwise."""
    lut = np.zeros(256, np.uint8)
    lut[np.asarray(list(classes), np.int64)] = 255
    return lut


def normalise(rgb: np.ndarray, dtype: np.dtype = np.dtype(np.float32)) -> np.ndarray:
    """uint8 [B,H,W,3] RGB -> [B,3,H,W] ImageNet-normalised, in ``dtype``."""
    scale = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
    offset = (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)
    x = rgb.astype(np.float32) * scale + offset
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(dtype, copy=False)


class BiSeNetParsing:
    """A face-parsing ONNX model (checked by :func:`stages.masks.onnx_models.validate_bisenet`).

    Args:
        model: path to the ``.onnx`` file.
        device: ``auto``, ``cuda`` or ``cpu``.
        neckhead_classes: classes merged into ``neckhead``.
        mouth_classes: classes merged into ``mouth``.
        fused: normalise and take the argmax in the graph (needs the ``onnx`` package; falls back
            to the host without it).
        threads: CPU intra-op threads (0: default).
    """

    def __init__(self, model: str | Path, device: str = "auto", neckhead_classes: Iterable[int] = NECKHEAD_CLASSES,
                 mouth_classes: Iterable[int] = MOUTH_CLASSES, fused: bool = True, threads: int = 0):
        self.path = Path(model)
        self.device = device
        self.threads = threads
        self.neckhead_lut = class_lut(neckhead_classes)
        self.mouth_lut = class_lut(mouth_classes)
        prepared = prepare_bisenet(self.path, tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)) if fused else None
        self.fused = open_session(prepared, device, threads) if prepared is not None else None
        self._plain = None if self.fused is not None else open_session(self.path, device, threads)
        x = (self.fused or self._plain).get_inputs()[0]
        self.max_batch = x.shape[0] if isinstance(x.shape[0], int) else None

    @property
    def session(self):
        """The session that runs: the prepared one where ``onnx`` is installed, else the plain one."""
        return self.fused if self.fused is not None else self.plain

    @property
    def plain(self):
        """The model as supplied (float input, logits out), opened on first use."""
        if self._plain is None:
            self._plain = open_session(self.path, self.device, self.threads)
        return self._plain

    def _chunks(self, rgb: np.ndarray):
        step = self.max_batch or len(rgb)
        for i in range(0, len(rgb), max(step, 1)):
            yield rgb[i:i + step]

    def labels_reference(self, rgb: np.ndarray) -> np.ndarray:
        """Class labels via host argmax of the logits. uint8 [B,H,W,3] -> uint8 [B,H,W]."""
        x = self.plain.get_inputs()[0]
        dtype = np.dtype(FLOAT_TYPES[x.type])
        out = [self.plain.run(None, {x.name: normalise(c, dtype)})[0].argmax(axis=1) for c in self._chunks(rgb)]
        return np.concatenate(out).astype(np.uint8)

    def labels(self, rgb: np.ndarray) -> np.ndarray:
        """Class labels, computed in the graph where possible. uint8 [B,H,W,3] -> uint8 [B,H,W]."""
        if self.fused is None:
            return self.labels_reference(rgb)
        out = [self.fused.run(None, {U8_INPUT: np.ascontiguousarray(c)})[0] for c in self._chunks(rgb)]
        return np.concatenate(out).astype(np.uint8, copy=False)

    def masks(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(neckhead, mouth)`` uint8 with values 0 or 255, each shaped like ``labels``."""
        return self.neckhead_lut[labels], self.mouth_lut[labels]
