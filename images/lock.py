"""Generate (and check) the locked, hashed requirements of each container image.

Each image installs exactly one lock file with ``pip install --require-hashes``. A lock is generated
from pyproject.toml: the project's base dependencies + the image's optional group + the build-system
requirements (the project itself is built inside the image without build isolation), resolved for
Linux x86_64 and Python 3.11 by ``uv pip compile --generate-hashes``.

Images with a flavoured package (torch, onnxruntime) get two locks, chosen by the ``TORCH_FLAVOR``
build argument (build.sh passes it to every image; for the masks image it picks the onnxruntime
build). The pyproject group names the package as the code needs it (``torch``, ``onnxruntime``);
lock.py substitutes the flavour's pins for it (see ``FLAVOURED``), so ``make setup`` (the dev venv)
keeps the CPU builds and no CUDA variant is written twice in pyproject.toml:

- ``requirements.cuda.lock``: torch==TORCH_VERSION from PyPI (its Linux wheel is the CUDA build and
  pulls the CUDA runtime as ``nvidia-*`` wheels; torch 2.13.0 on PyPI is built for CUDA 13.0);
  onnxruntime-gpu[cuda,cudnn]==ORT_VERSION (built for CUDA 13; its ``cuda`` and ``cudnn`` extras pull
  cudart, nvrtc, cuFFT, cuRAND, cuDNN 9 and cuBLAS as ``nvidia-*`` wheels), with the CUDA runtime
  kept on the CUDA_LINE of the images' CUDA base (13.0);
- ``requirements.cpu.lock``: torch==TORCH_VERSION+cpu (PyTorch's CPU index, or a wheel folder given
  with ``--find-links``, as on the dev machines where /opt/wheels holds it); onnxruntime==ORT_VERSION
  (the CPU build from PyPI).

Every lock starts with a header whose ``input-sha256`` digests the inputs (requirement strings,
Python version, platform, flavour); ``python images/lock.py --check`` (and the test
tests/images/test_image_locks.py) recompute it offline and fail when pyproject.toml changed since the lock
was written. Regenerate with ``make lock``.

Usage: python images/lock.py [--check] [--image NAME] [--find-links DIR] [--cpu-index URL]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = ROOT / "images"

PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"       # uv's name for Linux x86_64, glibc >= 2.28
TORCH_VERSION = "2.13.0"                  # the same torch in the CUDA and CPU flavours (and in dev)
ORT_VERSION = "1.31.1"                    # onnxruntime(-gpu) in both flavours; 1.31.x GPU wheels need CUDA 13
CUDA_LINE = "13.0"                        # CUDA of the images' base (CUDA_VERSION); the runtime wheels stay on it
PYPI = "https://pypi.org/simple"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
HEADER_KEY = "input-sha256"


@dataclass(frozen=True)
class Flavoured:
    """A requirement of a pyproject group that each flavour replaces by its own pins.

    ``name``: the package as the group names it; ``cuda``/``cpu``: the requirement strings that
    replace it in that flavour's lock (the first names the package, further ones constrain what
    it pulls).
    """

    name: str
    cuda: tuple[str, ...]
    cpu: tuple[str, ...]


FLAVOURED = (
    Flavoured("torch", (f"torch=={TORCH_VERSION}",), (f"torch=={TORCH_VERSION}+cpu",)),
    # onnxruntime-gpu provides the same `onnxruntime` module; its extras pull the CUDA 13 libraries
    # its CUDA provider loads (libcudart.so.13, libcublas(Lt).so.13, libcurand.so.10, libcufft.so.12,
    # libcudnn.so.9); the runtime and NVRTC are held to the base image's CUDA line.
    Flavoured("onnxruntime",
              (f"onnxruntime-gpu[cuda,cudnn]=={ORT_VERSION}", f"nvidia-cuda-runtime=={CUDA_LINE}.*",
               f"nvidia-cuda-nvrtc=={CUDA_LINE}.*"),
              (f"onnxruntime=={ORT_VERSION}",)),
)


@dataclass(frozen=True)
class LockSpec:
    """One lock file: which image, which flavour (``cuda``/``cpu``; None for images without a
    flavoured package)."""

    image: str
    flavour: str | None

    @property
    def path(self) -> Path:
        name = "requirements.lock" if self.flavour is None else f"requirements.{self.flavour}.lock"
        return IMAGES_DIR / self.image / name


def _pyproject(root: Path = ROOT) -> dict:
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _strip(req: str) -> str:
    """A requirement string without spaces (comments are already gone after TOML parsing)."""
    return re.sub(r"\s+", "", req)


def requirements(image: str, root: Path = ROOT) -> list[str]:
    """The requirement strings an image's lock is resolved from, sorted and without spaces."""
    project = _pyproject(root)
    groups = project["project"].get("optional-dependencies", {})
    if image not in groups:
        raise KeyError(f"pyproject.toml has no optional group {image!r}; groups: {', '.join(groups)}")
    reqs = list(project["project"].get("dependencies", [])) + list(groups[image])
    reqs += list(project.get("build-system", {}).get("requires", []))
    return sorted({_strip(r) for r in reqs})


def _name(req: str) -> str:
    """The package name of a requirement string, lower case (``torch>=2.4`` -> ``torch``)."""
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()


def flavoured(image: str, root: Path = ROOT) -> list[Flavoured]:
    """The flavoured packages the image's group pulls (then it gets a CUDA and a CPU lock)."""
    names = {_name(r) for r in requirements(image, root)}
    return [f for f in FLAVOURED if f.name in names]


def has_torch(image: str, root: Path = ROOT) -> bool:
    """Whether the image's group pulls torch."""
    return any(f.name == "torch" for f in flavoured(image, root))


def specs(root: Path = ROOT) -> list[LockSpec]:
    """Every lock file of every image directory that has a Containerfile."""
    out: list[LockSpec] = []
    for d in sorted(p for p in IMAGES_DIR.iterdir() if (p / "Containerfile").is_file()):
        if flavoured(d.name, root):
            out += [LockSpec(d.name, "cuda"), LockSpec(d.name, "cpu")]
        else:
            out.append(LockSpec(d.name, None))
    return out


def flavour_pins(spec: LockSpec, root: Path = ROOT) -> dict[str, tuple[str, ...]]:
    """package name -> the requirement strings that replace it in this lock (empty without a flavour)."""
    if spec.flavour is None:
        return {}
    return {f.name: getattr(f, spec.flavour) for f in flavoured(spec.image, root)}


def resolve_inputs(spec: LockSpec, root: Path = ROOT) -> list[str]:
    """The requirement lines uv resolves for ``spec``: the group with its flavoured packages replaced."""
    pins = flavour_pins(spec, root)
    lines = [r for r in requirements(spec.image, root) if _name(r) not in pins]
    for name in sorted(pins):
        lines += list(pins[name])
    return lines


def input_digest(spec: LockSpec, root: Path = ROOT) -> str:
    """sha256 of everything a lock is generated from (what the header records)."""
    pins = flavour_pins(spec, root)
    torch = pins.get("torch")
    doc = {"requirements": requirements(spec.image, root), "torch": torch[0] if torch else None,
           "python": PYTHON_VERSION, "platform": PLATFORM}
    for name in sorted(set(pins) - {"torch"}):  # torch-only locks keep the digest they had before
        doc[name] = list(pins[name])
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    """The ``input-sha256`` a lock file's header records, or None."""
    if not lock.is_file():
        return None
    for line in lock.read_text().splitlines()[:20]:
        m = re.match(rf"#\s*{HEADER_KEY}:\s*([0-9a-f]{{64}})\s*$", line)
        if m:
            return m.group(1)
    return None


def stale(root: Path = ROOT) -> list[str]:
    """Human-readable problems: locks missing or generated from other inputs than pyproject's now."""
    problems = []
    for spec in specs(root):
        rel = spec.path.relative_to(ROOT)
        got = recorded_digest(spec.path)
        if got is None:
            problems.append(f"{rel}: missing or has no '{HEADER_KEY}' header; run `make lock`")
        elif got != input_digest(spec, root):
            problems.append(f"{rel}: stale (pyproject.toml's [{spec.image}] group or base dependencies changed); "
                            f"run `make lock`")
    return problems


def _uv() -> str:
    exe = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(exe).exists():
        raise SystemExit("lock.py needs uv (pip install uv); it resolves for Linux x86_64 / Python 3.11 from any host")
    return exe


def compile_lock(spec: LockSpec, find_links: list[str], cpu_index: str | None) -> None:
    """Resolve ``spec`` with uv and write its lock file with the header."""
    with tempfile.TemporaryDirectory() as tmp:
        req_in = Path(tmp) / "requirements.in"
        lines = resolve_inputs(spec)
        req_in.write_text("\n".join(lines) + "\n")
        out = Path(tmp) / "out.txt"
        cmd = [_uv(), "pip", "compile", str(req_in), "-o", str(out), "--quiet", "--no-header",
               "--generate-hashes", "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM,
               "--index-url", PYPI, "--no-annotate"]
        if spec.flavour == "cpu" and has_torch(spec.image):
            if cpu_index:
                cmd += ["--extra-index-url", cpu_index, "--index-strategy", "unsafe-best-match"]
            for d in find_links:
                cmd += ["--find-links", d]
        env = {**os.environ, "UV_NO_CONFIG": "1"}
        subprocess.run(cmd, check=True, env=env)
        body = "\n".join(l for l in out.read_text().splitlines()
                         if not l.startswith(("--find-links", "-f "))) + "\n"
    header = (f"# Locked requirements of the {spec.image} image"
              + (f" ({spec.flavour} {', '.join(sorted(flavour_pins(spec)))})" if spec.flavour else "") + ". Generated by `make lock`; do not edit.\n"
              f"# Linux x86_64, Python {PYTHON_VERSION}; install with pip install --require-hashes --no-deps.\n"
              f"# {HEADER_KEY}: {input_digest(spec)}\n")
    spec.path.write_text(header + body)
    print(f"wrote {spec.path.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report stale or missing locks (offline)")
    ap.add_argument("--image", action="append", help="only this image (repeatable)")
    ap.add_argument("--find-links", action="append", default=[],
                    help="a folder of wheels for the CPU torch flavour (default: $PIP_FIND_LINKS if set)")
    ap.add_argument("--cpu-index", default=None,
                    help=f"PyTorch CPU wheel index (default {CPU_INDEX} unless --find-links is given)")
    args = ap.parse_args(argv)
    if args.check:
        problems = stale()
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    find_links = args.find_links or [d for d in os.environ.get("PIP_FIND_LINKS", "").split() if d]
    cpu_index = args.cpu_index or (None if find_links else CPU_INDEX)
    for spec in specs():
        if args.image and spec.image not in args.image:
            continue
        compile_lock(spec, find_links, cpu_index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
