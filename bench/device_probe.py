"""Print what the GPU machine has (versions, which optional modules import, ONNX providers)."""

import importlib
import json
import os
import platform

out = {"python": platform.python_version(), "cpus": os.cpu_count()}
for name in ("torch", "numpy", "triton", "cv2", "mediapipe", "onnxruntime", "av", "scipy", "PIL", "yaml", "boto3",
             "gsplat", "typer", "rich", "jaxtyping", "warp", "pytest"):
    try:
        m = importlib.import_module(name)
        out[name] = getattr(m, "__version__", "ok")
    except Exception as e:  # report, do not fail
        out[name] = f"missing ({type(e).__name__})"
try:
    import onnxruntime as ort

    out["onnxruntime_providers"] = ort.get_available_providers()
except Exception:
    pass
import torch

if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out["gpu"] = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs"
print(json.dumps(out, indent=1))
