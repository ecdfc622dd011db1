"""The images' locked requirements: present, hashed, and generated from pyproject.toml as it is now
(offline: the lock header's input digest is recomputed from pyproject.toml). `make lock` regenerates."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"


def _lock_module():
    spec = importlib.util.spec_from_file_location("images_lock", IMAGES / "lock.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


lock = _lock_module()


def _pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a lock file."""
    text = path.read_text().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+)\s*(.*)$", line)
        if m:
            out[m.group(1).lower()] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", m.group(3)))
    return out


def test_every_image_has_its_locks():
    names = sorted(p.parent.name for p in IMAGES.glob("*/Containerfile"))
    assert names == ["masks", "tracker", "train"]
    specs = lock.specs()
    assert {(s.image, s.flavour) for s in specs} == {("tracker", "cuda"), ("tracker", "cpu"), ("masks", "cuda"),
                                                     ("masks", "cpu"), ("train", "cuda"), ("train", "cpu")}
    for s in specs:
        assert s.path.is_file(), f"{s.path} missing; run `make lock`"


def test_locks_are_fresh():
    assert lock.stale() == []


def test_a_changed_group_makes_its_lock_stale(tmp_path):
    """Copy the repo's pyproject with one requirement changed: exactly that group's locks go stale."""
    text = (ROOT / "pyproject.toml").read_text()
    changed = text.replace('"gsplat==1.5.3"', '"gsplat==1.5.2"')
    assert changed != text
    (tmp_path / "pyproject.toml").write_text(changed)
    for spec in lock.specs():
        same = lock.input_digest(spec, tmp_path) == lock.recorded_digest(spec.path)
        assert same == (spec.image != "train"), spec
    base_changed = text.replace('"typer>=0.12"', '"typer>=0.13"')
    (tmp_path / "pyproject.toml").write_text(base_changed)
    assert all(lock.input_digest(s, tmp_path) != lock.recorded_digest(s.path) for s in lock.specs())
    assert len(lock.stale(tmp_path)) == 6 and "make lock" in lock.stale(tmp_path)[0]


def test_every_pin_is_exact_and_hashed():
    for spec in lock.specs():
        pins = _pins(spec.path)
        assert pins, spec.path
        unhashed = [n for n, (_, h) in pins.items() if not h]
        assert unhashed == [], f"{spec.path.name}: {unhashed}"
        for req in lock.resolve_inputs(spec):  # the group, its flavoured packages replaced
            name = re.split(r"[<>=!~\[; ]", req)[0].lower()
            assert name in pins, f"{spec.path}: {name} from pyproject missing"


def test_lock_contents_match_the_image_rules():
    tracker_cuda = _pins(IMAGES / "tracker" / "requirements.cuda.lock")
    tracker_cpu = _pins(IMAGES / "tracker" / "requirements.cpu.lock")
    masks = _pins(IMAGES / "masks" / "requirements.cpu.lock")
    masks_cuda = _pins(IMAGES / "masks" / "requirements.cuda.lock")
    train_cuda = _pins(IMAGES / "train" / "requirements.cuda.lock")
    for pins in (tracker_cuda, tracker_cpu, masks, masks_cuda):  # mediapipe with NumPy < 2
        assert pins["mediapipe"][0] == "0.10.21"
        assert int(pins["numpy"][0].split(".")[0]) < 2
    assert "torch" not in masks and "torch" not in masks_cuda
    assert tracker_cpu["torch"][0] == f"{lock.TORCH_VERSION}+cpu"
    assert tracker_cuda["torch"][0] == train_cuda["torch"][0] == lock.TORCH_VERSION
    assert any(n.startswith("nvidia-cuda-runtime") for n in train_cuda)  # the CUDA build of torch
    assert not any(n.startswith("nvidia-") for n in tracker_cpu)
    assert train_cuda["gsplat"][0] == "1.5.3" and len(train_cuda["gsplat"][1]) >= 2  # sdist hash too


# What onnxruntime-gpu's CUDA provider loads at run time -> the nvidia-* wheel that ships it and the
# soname's major version that wheel's version must have (CUDA 13 build of onnxruntime-gpu 1.31).
ORT_CUDA_LIBS = {
    "libcudart.so.13": ("nvidia-cuda-runtime", 13),
    "libcublas.so.13": ("nvidia-cublas", 13),
    "libcublasLt.so.13": ("nvidia-cublas", 13),
    "libcurand.so.10": ("nvidia-curand", 10),
    "libcufft.so.12": ("nvidia-cufft", 12),
    "libcudnn.so.9": ("nvidia-cudnn-cu13", 9),
}


def test_masks_cuda_lock_has_onnxruntime_gpu_and_its_cuda_libraries():
    cuda = _pins(IMAGES / "masks" / "requirements.cuda.lock")
    assert "onnxruntime-gpu" in cuda, "masks cuda lock lacks onnxruntime-gpu"
    assert cuda["onnxruntime-gpu"][0] == lock.ORT_VERSION
    assert "onnxruntime" not in cuda  # the CPU build would install over the same `onnxruntime` module
    for so, (wheel, major) in ORT_CUDA_LIBS.items():
        assert wheel in cuda, f"masks cuda lock lacks {wheel} ({so})"
        assert int(cuda[wheel][0].split(".")[0]) == major, (so, wheel, cuda[wheel][0])
    # the CUDA runtime on the line of the image's CUDA base (CUDA_VERSION), not whatever is newest
    assert cuda["nvidia-cuda-runtime"][0].split(".")[:2] == lock.CUDA_LINE.split(".")


def test_masks_cpu_lock_has_the_cpu_onnxruntime_only():
    cpu = _pins(IMAGES / "masks" / "requirements.cpu.lock")
    assert "onnxruntime-gpu" not in cpu, "masks cpu lock has onnxruntime-gpu"
    assert "onnxruntime" in cpu and cpu["onnxruntime"][0] == lock.ORT_VERSION  # as in the CUDA flavour
    assert not any(n.startswith("nvidia-") for n in cpu)


def test_masks_flavours_differ_only_in_onnxruntime():
    cpu = _pins(IMAGES / "masks" / "requirements.cpu.lock")
    cuda = _pins(IMAGES / "masks" / "requirements.cuda.lock")
    rest = lambda pins: {n: v for n, (v, _) in pins.items() if not n.startswith(("onnxruntime", "nvidia-"))}
    assert rest(cpu) == rest(cuda) and "mediapipe" in rest(cpu)


def test_flavour_substitution_leaves_the_dev_group_alone():
    """pyproject's [masks] group names the CPU onnxruntime (what `make setup` installs); only the
    images' CUDA lock swaps in onnxruntime-gpu."""
    group = lock.requirements("masks")
    assert any(re.match(r"onnxruntime([<>=!~; ]|$)", r) for r in group)
    assert not any(r.startswith("onnxruntime-gpu") for r in group)
    cuda = lock.resolve_inputs(lock.LockSpec("masks", "cuda"))
    cpu = lock.resolve_inputs(lock.LockSpec("masks", "cpu"))
    assert f"onnxruntime-gpu[cuda,cudnn]=={lock.ORT_VERSION}" in cuda
    assert not any(re.match(r"onnxruntime([<>=!~; ]|$)", r) for r in cuda)
    assert cpu.count(f"onnxruntime=={lock.ORT_VERSION}") == 1 and not any("gpu" in r for r in cpu)
    # the torch images' digests do not depend on the onnxruntime pins (their locks stayed as they were)
    assert lock.flavour_pins(lock.LockSpec("tracker", "cuda")) == {"torch": (f"torch=={lock.TORCH_VERSION}",)}


def test_containerfiles_follow_the_rules():
    for image in ("tracker", "masks", "train"):
        text = (IMAGES / image / "Containerfile").read_text()
        stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
        assert len(stages) == 2 and stages[1] == "${BASE_IMAGE}", image  # multi-stage, runtime base is an ARG
        assert re.search(r"^ARG BASE_REGISTRY=", text, re.M)
        assert "--require-hashes" in text
        final = text.split("\nFROM ${BASE_IMAGE}")[1]
        assert re.search(r"^USER 10001", final, re.M), image  # non-root
        assert 'ENTRYPOINT ["avatar"]' in final
        assert not re.search(r"\b(g\+\+|gcc|build-essential|python3\.11-dev|pip install)\b", final), image
        assert not re.search(r"\.(pkl|onnx|pth|pt|ckpt)\b", text), image  # no model files baked in
    for image in ("tracker", "masks", "train"):
        text = (IMAGES / image / "Containerfile").read_text()
        # the CUDA base images match the CUDA that the locked torch was built for (its nvidia-cuda-runtime)
        runtime = _pins(IMAGES / image / "requirements.cuda.lock")["nvidia-cuda-runtime"][0]
        cuda = re.search(r"^ARG CUDA_VERSION=(\S+)", text, re.M).group(1)
        assert cuda.split(".")[:2] == runtime.split(".")[:2], (image, cuda, runtime)
        assert "requirements.${TORCH_FLAVOR}.lock" in text
        final = text.split("\nFROM ${BASE_IMAGE}")[1].replace("\\\n", " ")
        assert re.search(r"^ENV .*NVIDIA_DRIVER_CAPABILITIES=compute,utility", final, re.M), image
    train = (IMAGES / "train" / "Containerfile").read_text()
    assert re.search(r'^ARG TORCH_CUDA_ARCH_LIST=', train, re.M) and "--no-binary gsplat" in train


def test_lock_cli_check_passes_offline():
    res = subprocess.run([sys.executable, str(IMAGES / "lock.py"), "--check"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr


def test_a_new_onnxruntime_pin_makes_only_the_masks_locks_stale(monkeypatch):
    before = {s: lock.input_digest(s) for s in lock.specs()}
    bumped = tuple(lock.Flavoured(f.name, tuple(r.replace(lock.ORT_VERSION, "9.9.9") for r in f.cuda), f.cpu)
                   if f.name == "onnxruntime" else f for f in lock.FLAVOURED)
    monkeypatch.setattr(lock, "FLAVOURED", bumped)
    changed = {(s.image, s.flavour) for s in lock.specs() if lock.input_digest(s) != before[s]}
    assert changed == {("masks", "cuda")}
