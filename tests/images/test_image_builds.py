"""Smoke builds of the three images with buildah (``make test-images``; not in the default run).

No registry can be pulled from here, so the builds use the same Containerfiles with a local Debian
bookworm base (images/test-base.sh, debootstrap) for both BASE_IMAGE and BUILDER_IMAGE, and the
CPU torch lock (TORCH_FLAVOR=cpu): the build arguments a CUDA build sets differently. Then each image
is checked from inside: `avatar --help`, the user, the stage libraries import, and no compiler or
pip is left in the final image.

Environment: AVATAR_SMOKE_FIND_LINKS (a wheel folder mounted for pip, default /opt/wheels when it
exists), AVATAR_SMOKE_CA (a CA bundle mounted for pip behind a TLS-intercepting proxy, default the
host's /etc/ssl/certs/ca-certificates.crt).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/debian:bookworm-minbase"
REGISTRY = "localhost/avatar-pipeline-smoke"
TAG = "smoke"

pytestmark = [
    pytest.mark.images,
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(shutil.which("buildah") is None, reason="needs buildah (apt-get install -y buildah runc)"),
]

# What must import in each image (python code run inside it), and a package that must not be there.
CHECKS = {
    "tracker": ("import torch, av, scipy, cv2, mediapipe as mp, numpy as np; "
                "assert np.__version__.startswith('1.'), np.__version__; "
                "assert mp.__version__ == '0.10.21'; "
                "assert 'GTK' not in cv2.getBuildInformation().split('GUI:')[1].split('\\n')[1]; "
                "import os; assert os.path.exists(cv2.data.haarcascades + 'haarcascade_frontalface_default.xml'); "
                "fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True); "
                "r = fm.process(np.zeros((64, 64, 3), np.uint8)); assert r.multi_face_landmarks is None; "
                "import importlib.util; assert importlib.util.find_spec('jax') is None; "
                "print('torch', torch.__version__)", None),
    "masks": ("import onnxruntime, av, cv2, mediapipe as mp, numpy as np; "
              "assert np.__version__.startswith('1.'); "
              "assert 'CUDAExecutionProvider' not in onnxruntime.get_available_providers(); "  # cpu flavour
              "seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0); "
              "r = seg.process(np.zeros((64, 64, 3), np.uint8)); assert r.segmentation_mask.shape == (64, 64); "
              "import importlib.util; assert importlib.util.find_spec('jax') is None; "
              "print('onnxruntime', onnxruntime.__version__)", "torch"),
    "train": ("import torch, gsplat, scipy, av; import gsplat.rendering; "
              "import ctypes; ctypes.CDLL('libgomp.so.1'); "  # gsplat's compiled module needs it
              "print('torch', torch.__version__, 'gsplat', gsplat.__version__)", "mediapipe"),
}


def _run(cmd: list[str], timeout: float = 1800, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def base_image() -> str:
    if os.geteuid() != 0:
        pytest.skip("buildah --isolation chroot and debootstrap need root here")
    res = _run([str(ROOT / "images" / "test-base.sh"), BASE], timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    return BASE


def _build(image: str, base: str) -> tuple[float, str]:
    find_links = os.environ.get("AVATAR_SMOKE_FIND_LINKS", "/opt/wheels" if Path("/opt/wheels").is_dir() else "")
    ca = os.environ.get("AVATAR_SMOKE_CA", "/etc/ssl/certs/ca-certificates.crt")
    args = [f"BASE_IMAGE={base}", f"BUILDER_IMAGE={base}", "PIP_CERT=/run/host-ca.crt"]
    opts = ["--isolation", "chroot", "--pull-never", "-v", f"{ca}:/run/host-ca.crt:ro"]
    if find_links:
        args.append(f"PIP_FIND_LINKS={find_links}")
        opts += ["-v", f"{find_links}:{find_links}:ro"]
    env = {**os.environ, "BUILDER": "buildah", "REGISTRY": REGISTRY, "TAG": TAG, "TORCH_FLAVOR": "cpu",
           "BUILD_ARGS": " ".join(args), "BUILD_OPTS": " ".join(opts),
           "TMPDIR": os.environ.get("TMPDIR", "/var/tmp")}
    start = time.monotonic()
    res = _run([str(ROOT / "images" / "build.sh"), image], timeout=3000, env=env)
    seconds = time.monotonic() - start
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return seconds, f"{REGISTRY}/{image}:{TAG}"


def _in_image(name: str, *cmd: str) -> subprocess.CompletedProcess:
    ctr = _run(["buildah", "from", "--pull-never", name]).stdout.strip()
    assert ctr
    try:
        return _run(["buildah", "run", "--isolation", "chroot", ctr, "--", *cmd], timeout=600)
    finally:
        _run(["buildah", "rm", ctr])


@pytest.mark.parametrize("image", ["tracker", "masks", "train"])
def test_image_builds_and_runs(image, base_image, capsys):
    seconds, name = _build(image, base_image)
    info = json.loads(_run(["buildah", "inspect", "--type", "image", name]).stdout)
    config = info["OCIv1"]["config"]
    assert config["Entrypoint"] == ["avatar"]
    assert config["User"] == "10001:10001"
    size = _run(["buildah", "images", "--format", "{{.Size}}", name]).stdout.strip()
    with capsys.disabled():
        print(f"\n{name}: built in {seconds:.0f} s, {size}")

    res = _in_image(name, "avatar", "--help")
    assert res.returncode == 0 and "avatar" in res.stdout, res.stderr
    res = _in_image(name, "id", "-u")
    assert res.stdout.strip() == "10001"
    code, absent = CHECKS[image]
    res = _in_image(name, "python", "-c", code)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    if absent:
        res = _in_image(name, "python", "-c", f"import {absent}")
        assert res.returncode != 0, f"{absent} should not be in the {image} image"
    # no build tools or installers left in the final image
    res = _in_image(name, "sh", "-c", "command -v gcc g++ cc nvcc make; python -m pip --version")
    assert res.stdout.strip() == "" and res.returncode != 0, res.stdout
