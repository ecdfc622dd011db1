"""The masks image's flavour (offline, no build): images/masks/Containerfile installs the lock its
TORCH_FLAVOR build argument names, points the loader at the nvidia-* wheel libraries, and runs
images/masks/check_cuda_libs.sh, whose verdicts are checked here on folder trees laid out like the
wheels (nvidia/cu13/lib, nvidia/cudnn/lib)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MASKS = ROOT / "images" / "masks"
CONTAINERFILE = MASKS / "Containerfile"
CHECK = MASKS / "check_cuda_libs.sh"
# what onnxruntime-gpu 1.31's CUDA provider loads (besides the driver's libcuda.so.1), by wheel folder
CUDA_LIBS = {"cu13/lib": ["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10",
                          "libcufft.so.12"],
             "cudnn/lib": ["libcudnn.so.9"]}


def _lock_module():
    spec = importlib.util.spec_from_file_location("images_lock_flavour", ROOT / "images" / "lock.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _stages(text: str) -> tuple[str, str]:
    """(build stage, final stage) of a two-stage Containerfile, line continuations joined."""
    joined = text.replace("\\\n", " ")
    head, rest = joined.split("\nFROM ${BUILDER_IMAGE} AS build\n")
    build, final = rest.split("\nFROM ${BASE_IMAGE}\n")
    return build, final


def _expand(line: str, flavour: str) -> str:
    return line.replace("${TORCH_FLAVOR}", flavour)


def test_containerfile_installs_the_lock_its_flavour_names():
    build, final = _stages(CONTAINERFILE.read_text())
    assert re.search(r"^ARG TORCH_FLAVOR=cuda$", build, re.M)  # declared in the stage that uses it
    assert "requirements.lock" not in CONTAINERFILE.read_text()  # no unflavoured lock any more
    copies = [l for l in build.splitlines() if l.startswith("COPY images/masks/")]
    copied = {Path(w).name: ROOT / w for l in copies for w in l.split()[1:-1]}
    for name, path in copied.items():
        assert path.is_file(), f"the Containerfile copies {path}, which is missing"
    runs = [l for l in build.splitlines() if l.startswith("RUN ")]
    for flavour in ("cuda", "cpu"):
        expanded = [_expand(l, flavour) for l in runs]
        installs = [m for l in expanded if "--require-hashes" in l
                    for m in re.findall(r"-r /tmp/locks/(\S+)", l)]
        assert installs and installs[0] == f"requirements.{flavour}.lock", (flavour, installs)
        assert f"requirements.{flavour}.lock" in copied
        # the headless OpenCV is re-installed from the same flavour's lock
        (cv2,) = [l for l in expanded if "opencv-python-headless" in l]
        assert f"/tmp/locks/requirements.{flavour}.lock" in cv2
        # the library check is told the flavour
        (check,) = [l for l in expanded if "check_cuda_libs.sh" in l]
        assert f'"{flavour}"' in check and '"${NVIDIA_LIBS}"' in check


def test_library_path_is_where_the_wheels_put_their_libraries():
    lock = _lock_module()
    text = CONTAINERFILE.read_text()
    build, final = _stages(text)
    libs = re.search(r"^ARG NVIDIA_LIBS=(\S+)$", text, re.M).group(1).split(":")
    site = f"/opt/avatar/lib/python{lock.PYTHON_VERSION}/site-packages/nvidia"
    major = lock.CUDA_LINE.split(".")[0]
    assert libs == [f"{site}/cu{major}/lib", f"{site}/cudnn/lib"]
    assert re.search(r"^RUN python3\.11 -m venv /opt/avatar$", build, re.M)  # the venv those paths assume
    assert lock.PYTHON_VERSION == "3.11"
    assert re.search(r"^ARG NVIDIA_LIBS$", build, re.M) and re.search(r"^ARG NVIDIA_LIBS$", final, re.M)
    env = re.search(r"\bLD_LIBRARY_PATH=(\S+)", final).group(1)
    assert env.split(":")[0] == "${NVIDIA_LIBS}"
    assert "/usr/local/nvidia/lib64" in text  # where GKE-style device plugins mount the driver
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert "torch" not in re.sub(r"#.*", "", text).replace("TORCH_FLAVOR", "")  # no torch in this image


def _tree(tmp_path: Path, *, provider: bool = True, skip: str | None = None) -> tuple[str, str]:
    """A site-packages-like tree: (LIB_DIRS, CAPI_DIR) for check_cuda_libs.sh."""
    site = tmp_path / "site-packages"
    dirs = []
    for sub, names in CUDA_LIBS.items():
        d = site / "nvidia" / sub
        d.mkdir(parents=True)
        dirs.append(str(d))
        for n in names:
            if n != skip:
                (d / n).write_bytes(b"")
    capi = site / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    if provider:
        (capi / "libonnxruntime_providers_cuda.so").write_bytes(b"")
    return ":".join(dirs), str(capi)


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(CHECK), *args], capture_output=True, text=True, timeout=30)


def test_check_passes_a_complete_cuda_tree(tmp_path):
    res = _check("cuda", *_tree(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "cuda flavour" in res.stdout


@pytest.mark.parametrize("lib", [n for names in CUDA_LIBS.values() for n in names])
def test_check_fails_when_a_cuda_library_is_missing(tmp_path, lib):
    res = _check("cuda", *_tree(tmp_path, skip=lib))
    assert res.returncode == 1 and lib in res.stderr, res.stderr


def test_check_fails_when_a_library_folder_is_not_listed(tmp_path):
    dirs, capi = _tree(tmp_path)
    res = _check("cuda", dirs.split(":")[0], capi)  # cuDNN's folder left out of LD_LIBRARY_PATH
    assert res.returncode == 1 and "libcudnn.so.9" in res.stderr


def test_check_fails_without_the_gpu_onnxruntime(tmp_path):
    res = _check("cuda", *_tree(tmp_path, provider=False))
    assert res.returncode == 1 and "onnxruntime-gpu" in res.stderr


def test_check_of_the_cpu_flavour(tmp_path):
    dirs, capi = _tree(tmp_path / "gpu")
    res = _check("cpu", dirs, capi)
    assert res.returncode == 1 and "TORCH_FLAVOR=cpu" in res.stderr  # the GPU build in a cpu image
    dirs, capi = _tree(tmp_path / "cpu", provider=False)
    res = _check("cpu", dirs, capi)
    assert res.returncode == 0, res.stderr


def test_check_refuses_an_unknown_flavour(tmp_path):
    res = _check("gpu", *_tree(tmp_path))
    assert res.returncode == 2 and "cuda or cpu" in res.stderr
    assert _check("cuda").returncode == 2


def test_check_needs_what_the_cuda_lock_ships():
    """The sonames the script requires are the ones this test's tree (and the lock test) expect."""
    m = re.search(r'NEEDED=\$\{CHECK_CUDA_LIBS_NEEDED:-"([^"]+)"\}', CHECK.read_text())
    assert m and sorted(m.group(1).split()) == sorted(n for names in CUDA_LIBS.values() for n in names)
