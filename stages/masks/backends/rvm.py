"""RobustVideoMatting through onnxruntime: a recurrent matting network, batched over streams.

RVM carries four recurrent states from frame to frame, so frames of one stream run in order. To
batch on the GPU, a shard is cut into ``S`` contiguous streams that step together (batch ``B = S``).
Every stream first runs over the ``warmup`` frames before its first frame (taken from the previous
shard's tail for the first stream) with outputs discarded, so the state at a stream's first frame
is close to the state of one long unsharded run: shard and stream seams do not flicker. All
streams start at step 0 from zeros [1,1,1,1] (RVM's documented initial state, broadcast over B);
shorter streams are padded at their end by repeating their last frame (outputs discarded).

The states stay on the device between steps (onnxruntime IO binding); only ``pha`` comes back.
Where the ``onnx`` package is installed, frames go in as uint8 NHWC and are scaled in the graph
(:func:`stages.masks.onnx_models.prepare_rvm`); otherwise on the host (``fused=False`` forces that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.masks.onnx_models import FLOAT_TYPES, U8_INPUT, open_session, prepare_rvm

_STATE_IN = ("r1i", "r2i", "r3i", "r4i")
_STATE_OUT = ("r1o", "r2o", "r3o", "r4o")


@dataclass(frozen=True)
class Step:
    """One batched step: the frame each stream feeds, and which of them are real outputs.

    Attributes:
        frames: frame numbers, one per stream ([S]).
        emit: whether stream ``j``'s output at this step is a result (False: warm-up or padding).
    """

    frames: tuple[int, ...]
    emit: tuple[bool, ...]


def plan_streams(first: int, stop: int, streams: int, warmup: int, earliest: int) -> list[Step]:
    """Cut frames ``first..stop-1`` into ``streams`` contiguous streams with warm-up, as steps.

    Args:
        first: first frame number to produce.
        stop: one past the last frame number to produce.
        streams: number of streams (clamped to the number of frames).
        warmup: frames run before each stream's first frame, outputs discarded.
        earliest: lowest frame number available for warm-up (the previous shard's tail start, or
            ``first`` when there is none).

    Returns:
        Steps in order; every frame of ``first..stop-1`` is emitted exactly once.
    """
    n = stop - first
    if n <= 0:
        return []
    s = max(1, min(streams, n))
    bounds = [first + (n * j) // s for j in range(s + 1)]
    seqs: list[list[tuple[int, bool]]] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        w0 = max(earliest, a - warmup)
        seqs.append([(k, False) for k in range(w0, a)] + [(k, True) for k in range(a, b)])
    steps_n = max(len(q) for q in seqs)
    for q in seqs:
        q.extend([(q[-1][0], False)] * (steps_n - len(q)))
    return [Step(tuple(q[t][0] for q in seqs), tuple(q[t][1] for q in seqs)) for t in range(steps_n)]


def streams_for(n_frames: int, batch_size: int, warmup: int) -> int:
    """How many streams a shard of ``n_frames`` gets: up to ``batch_size``, but each stream at
    least ``4 * warmup`` frames long so the warm-up costs at most a quarter more work."""
    return max(1, min(batch_size, n_frames // max(4 * warmup, 1)))


class RvmMatting:
    """An RVM ONNX model with its recurrent state.

    Args:
        model: path to the ``.onnx`` file (checked by :func:`stages.masks.onnx_models.validate_rvm`).
        device: ``auto``, ``cuda`` or ``cpu`` (onnxruntime provider choice).
        downsample_ratio: RVM's internal downsampling; 1.0 for inputs of 512 or less.
        threads: CPU intra-op threads (0: default).
        fused: scale uint8 frames inside the graph (needs ``onnx``; host conversion without it).
    """

    def __init__(self, model: str | Path, device: str = "auto", downsample_ratio: float = 1.0, threads: int = 0,
                 fused: bool = True):
        import onnxruntime as ort

        self._ort = ort
        prepared = prepare_rvm(model) if fused else None
        self.fused = prepared is not None
        self.session = open_session(prepared if prepared is not None else model, device, threads)
        r1 = next(i for i in self.session.get_inputs() if i.name == "r1i")  # validated: src's dtype
        self.dtype = np.dtype(FLOAT_TYPES[r1.type])
        self.on_cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.device_type = "cuda" if self.on_cuda else "cpu"
        self.ratio = np.array([downsample_ratio], np.float32)
        self.reset()

    def reset(self) -> None:
        """Start a new stream batch: states back to zeros [1,1,1,1]."""
        z = np.zeros((1, 1, 1, 1), self.dtype)
        self.state = [self._ort.OrtValue.ortvalue_from_numpy(z, self.device_type, 0) for _ in _STATE_IN]

    def step(self, rgb: np.ndarray) -> np.ndarray:
        """Advance every stream by one frame.

        Args:
            rgb: uint8 [S,H,W,3], stream ``j``'s next frame at ``rgb[j]`` (S fixed until reset).

        Returns:
            float32 [S,H,W] alpha in 0..1.
        """
        io = self.session.io_binding()
        if self.fused:
            io.bind_cpu_input(U8_INPUT, np.ascontiguousarray(rgb))
        else:
            src = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)).astype(self.dtype) * self.dtype.type(1 / 255)
            io.bind_cpu_input("src", src)
        io.bind_cpu_input("downsample_ratio", self.ratio)
        for name, value in zip(_STATE_IN, self.state):
            io.bind_ortvalue_input(name, value)
        io.bind_output("fgr", self.device_type)
        io.bind_output("pha", "cpu")
        for name in _STATE_OUT:
            io.bind_output(name, self.device_type)
        self.session.run_with_iobinding(io)
        outs = dict(zip([o.name for o in self.session.get_outputs()], io.get_outputs()))
        self.state = [outs[n] for n in _STATE_OUT]
        return np.clip(outs["pha"].numpy()[:, 0].astype(np.float32), 0.0, 1.0)
