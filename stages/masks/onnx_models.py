"""User-supplied ONNX models: format checks (``avatar assets add matting|parsing FILE``) and sessions.

Accepted signatures (names and ranks are checked, sizes only where they are fixed):

RVM (RobustVideoMatting's own ``export_onnx.py``, e.g. ``rvm_mobilenetv3_fp32.onnx``/``_fp16``):
    inputs  ``src`` [B,3,H,W] float32 or float16 (RGB 0..1), ``r1i r2i r3i r4i`` [B,C,h,w] of
            ``src``'s dtype (recurrent states; zeros [1,1,1,1] start a stream),
            ``downsample_ratio`` [1] float32;
    outputs ``fgr`` [B,3,H,W], ``pha`` [B,1,H,W], ``r1o r2o r3o r4o`` (the next states).
BiSeNet face parsing (zllrunning/face-parsing.PyTorch exports, 19 classes):
    input   one tensor [B,3,H,W] float32 or float16, RGB normalised with ImageNet mean/std,
            H and W dynamic or 512;
    output  the first output is the logits [B,19,H,W] (float); further outputs (BiSeNet's
            auxiliary heads) are ignored.

Sessions use onnxruntime's CUDA provider where present (``device`` ``auto``/``cuda``), else the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.errors import bad_input

RVM_INPUTS = ("src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio")
RVM_OUTPUTS = ("fgr", "pha", "r1o", "r2o", "r3o", "r4o")
BISENET_CLASSES = 19
BISENET_SIZE = 512
FLOAT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}

_RVM_EXPECTED = ("expected a RobustVideoMatting ONNX export with inputs src [B,3,H,W] float, r1i..r4i "
                 "[B,C,H,W], downsample_ratio [1] float32 and outputs fgr, pha, r1o..r4o")
_RVM_FIX = ("use the official rvm_mobilenetv3_fp32.onnx (or fp16), RobustVideoMatting's export_onnx.py output "
            "or its checkpoint rvm_mobilenetv3.pth")
_BISENET_EXPECTED = ("expected a 19-class face-parsing ONNX model with one input [B,3,512,512] float "
                     "(H,W 512 or dynamic) and logits [B,19,H,W] as first output")
_BISENET_FIX = "export zllrunning/face-parsing.PyTorch's BiSeNet (79999_iter.pth) with torch.onnx.export at 512x512"


def _open_cpu(path: Path, expected: str, fix: str):
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise bad_input(path, f"not a loadable ONNX model ({first}); {expected}", fix) from None


def _dims(shape: list[Any]) -> list[int | str]:
    """ONNX Runtime shape with unknown dims as ``'?'``."""
    return [d if isinstance(d, int) else (d or "?") for d in shape]


def _fixed(d: Any, value: int) -> bool:
    """A dim is acceptable if it is symbolic or equals ``value``."""
    return not isinstance(d, int) or d == value


def validate_rvm(path: str | Path) -> dict[str, Any]:
    """Check that ``path`` is a RobustVideoMatting ONNX export (see the module docstring).

    Returns:
        facts: ``{"model": "rvm", "dtype", "inputs": {name: shape}, "outputs": {name: shape}}``.

    Raises:
        BadInput: one line naming the file, what was expected and what was found.
    """
    path = Path(path)
    sess = _open_cpu(path, _RVM_EXPECTED, _RVM_FIX)
    ins = {i.name: i for i in sess.get_inputs()}
    outs = {o.name: o for o in sess.get_outputs()}
    missing = [n for n in RVM_INPUTS if n not in ins] + [n for n in RVM_OUTPUTS if n not in outs]
    if missing:
        raise bad_input(path, f"{_RVM_EXPECTED}; missing {', '.join(missing)} (found inputs "
                        f"{', '.join(ins) or 'none'}; outputs {', '.join(outs) or 'none'})", _RVM_FIX)
    src = ins["src"]
    problems = []
    dtype = FLOAT_TYPES.get(src.type)
    if dtype is None:
        problems.append(f"src is {src.type}")
    if len(src.shape) != 4 or not _fixed(src.shape[1], 3):
        problems.append(f"src has shape {_dims(src.shape)}")
    for n in ("r1i", "r2i", "r3i", "r4i"):
        if len(ins[n].shape) != 4 or ins[n].type != src.type:
            problems.append(f"{n} is {ins[n].type} {_dims(ins[n].shape)}")
    dr = ins["downsample_ratio"]
    if dr.type != "tensor(float)" or len(dr.shape) != 1:
        problems.append(f"downsample_ratio is {dr.type} {_dims(dr.shape)}")
    pha = outs["pha"]
    if len(pha.shape) != 4 or not _fixed(pha.shape[1], 1) or pha.type not in FLOAT_TYPES:
        problems.append(f"pha is {pha.type} {_dims(pha.shape)}")
    for n in ("r1o", "r2o", "r3o", "r4o"):
        if len(outs[n].shape) != 4:
            problems.append(f"{n} has shape {_dims(outs[n].shape)}")
    if problems:
        raise bad_input(path, f"{_RVM_EXPECTED}; found {'; '.join(problems)}", _RVM_FIX)
    return {"model": "rvm", "dtype": dtype,
            "inputs": {n: _dims(ins[n].shape) for n in RVM_INPUTS},
            "outputs": {n: _dims(outs[n].shape) for n in RVM_OUTPUTS}}


def validate_bisenet(path: str | Path) -> dict[str, Any]:
    """Check that ``path`` is a 19-class face-parsing ONNX model (see the module docstring).

    Returns:
        facts: ``{"model": "bisenet", "dtype", "input": name, "input_shape", "output": name,
        "output_shape", "classes": 19}``.

    Raises:
        BadInput: one line naming the file, what was expected and what was found.
    """
    path = Path(path)
    sess = _open_cpu(path, _BISENET_EXPECTED, _BISENET_FIX)
    ins, outs = sess.get_inputs(), sess.get_outputs()
    problems = []
    if len(ins) != 1:
        problems.append(f"{len(ins)} inputs ({', '.join(i.name for i in ins)})")
    if not outs:
        problems.append("no outputs")
    if not problems:
        x, y = ins[0], outs[0]
        if x.type not in FLOAT_TYPES:
            problems.append(f"input {x.name} is {x.type}")
        if len(x.shape) != 4 or not _fixed(x.shape[1], 3) or not all(_fixed(d, BISENET_SIZE) for d in x.shape[2:]):
            problems.append(f"input {x.name} has shape {_dims(x.shape)}")
        if y.type not in FLOAT_TYPES:
            problems.append(f"output {y.name} is {y.type}")
        if len(y.shape) != 4 or not _fixed(y.shape[1], BISENET_CLASSES) or not all(
                _fixed(d, BISENET_SIZE) for d in y.shape[2:]):
            problems.append(f"output {y.name} has shape {_dims(y.shape)}")
    if problems:
        raise bad_input(path, f"{_BISENET_EXPECTED}; found {'; '.join(problems)}", _BISENET_FIX)
    x, y = ins[0], outs[0]
    return {"model": "bisenet", "dtype": FLOAT_TYPES[x.type], "input": x.name, "input_shape": _dims(x.shape),
            "output": y.name, "output_shape": _dims(y.shape), "classes": BISENET_CLASSES}


def providers_for(device: str) -> list[str]:
    """onnxruntime providers for ``device`` (``auto``, ``cuda`` or ``cpu``).

    Raises:
        BadInput: ``cuda`` was asked for but this onnxruntime has no CUDA provider.
    """
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device not in ("auto", "cuda", "cpu"):
        raise bad_input("masks config", f"onnx_device {device!r} is unknown", "use auto, cuda or cpu")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise bad_input("masks config", "onnx_device is cuda but onnxruntime has no CUDA provider "
                        f"(has {', '.join(have)})", "install onnxruntime-gpu or set onnx_device to auto or cpu")
    return ["CPUExecutionProvider"]


def open_session(model: str | Path | bytes, device: str = "auto", threads: int = 0):
    """An ``onnxruntime.InferenceSession`` on the CUDA provider where present, else the CPU.

    Args:
        model: path to an ``.onnx`` file or its serialised bytes.
        device: ``auto``, ``cuda`` or ``cpu`` (see :func:`providers_for`).
        threads: intra-op threads for the CPU provider (0: onnxruntime's default).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        so.intra_op_num_threads = threads
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=providers_for(device))


def _load_onnx(path: str | Path):
    try:
        import onnx
    except ImportError:
        return None
    return onnx.load(str(path))


def _uint8_input(model, name: str, scale: tuple[float, float, float], offset: tuple[float, float, float]) -> None:
    """Replace float input ``name`` [B,3,H,W] by ``rgb_u8`` uint8 [B,H,W,3] and, in the graph:
    cast, transpose to NCHW, ``x * scale + offset`` per channel, cast to the input's dtype."""
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    g = model.graph
    old = next(i for i in g.input if i.name == name)
    elem = old.type.tensor_type.elem_type
    g.input.remove(old)
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or f"d{i}")
            for i, d in enumerate(old.type.tensor_type.shape.dim)]
    b, h, w = (dims[0], dims[2], dims[3]) if len(dims) == 4 else ("b", "h", "w")
    g.input.insert(0, helper.make_tensor_value_info(U8_INPUT, TensorProto.UINT8, [b, h, w, 3]))  # keeps fixed sizes
    g.initializer.extend([
        numpy_helper.from_array(np.asarray(scale, np.float32).reshape(1, 3, 1, 1), "u8_scale__"),
        numpy_helper.from_array(np.asarray(offset, np.float32).reshape(1, 3, 1, 1), "u8_offset__")])
    last = name if elem == TensorProto.FLOAT else "u8_norm__"
    pre = [helper.make_node("Cast", [U8_INPUT], ["u8_f__"], to=TensorProto.FLOAT),
           helper.make_node("Transpose", ["u8_f__"], ["u8_nchw__"], perm=[0, 3, 1, 2]),
           helper.make_node("Mul", ["u8_nchw__", "u8_scale__"], ["u8_scaled__"]),
           helper.make_node("Add", ["u8_scaled__", "u8_offset__"], [last])]
    if elem != TensorProto.FLOAT:
        pre.append(helper.make_node("Cast", [last], [name], to=elem))
    for node in reversed(pre):  # nodes must stay topologically sorted: the prefix goes first
        g.node.insert(0, node)


U8_INPUT = "rgb_u8"
"""Name of the uint8 NHWC image input of the prepared models (see :func:`prepare_rvm`)."""


def prepare_rvm(path: str | Path) -> bytes | None:
    """The RVM model taking ``rgb_u8`` uint8 [B,H,W,3] instead of ``src`` (scaled to 0..1 in the
    graph, on the GPU where the session runs there), as serialised ONNX bytes; ``None`` where the
    ``onnx`` package is not installed (callers then convert on the host)."""
    m = _load_onnx(path)
    if m is None:
        return None
    _uint8_input(m, "src", (1 / 255,) * 3, (0.0,) * 3)
    return m.SerializeToString()


def prepare_bisenet(path: str | Path, mean: tuple[float, float, float], std: tuple[float, float, float]) -> bytes | None:
    """The parsing model taking ``rgb_u8`` uint8 [B,H,W,3] (ImageNet normalisation in the graph)
    and returning only ``labels`` uint8 [B,H,W]: ``ArgMax(axis=1)`` of its first output, cast to
    uint8. ``None`` where the ``onnx`` package is not installed (callers then normalise and take
    the argmax on the host).

    Both moves cut host work and transfers: 3 bytes a pixel go to the GPU instead of 12, and 1 byte a
    pixel comes back instead of 19 floats."""
    m = _load_onnx(path)
    if m is None:
        return None
    from onnx import TensorProto, helper

    g = m.graph
    _uint8_input(m, g.input[0].name, tuple(1 / (255 * s) for s in std), tuple(-a / s for a, s in zip(mean, std)))
    logits = g.output[0].name
    g.node.append(helper.make_node("ArgMax", [logits], ["labels_i64__"], axis=1, keepdims=0))
    g.node.append(helper.make_node("Cast", ["labels_i64__"], ["labels"], to=TensorProto.UINT8))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("labels", TensorProto.UINT8, None))
    return m.SerializeToString()
