"""images/build.sh without building (--dry-run): the image names it pushes are the ones the
rendered workflow and the chart refer to, and build arguments reach the build command."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _dry_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "images" / "build.sh"), "--dry-run", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})


def test_names_match_the_workflow_settings():
    import workflows.settings as settings

    res = _dry_run("--push", REGISTRY="registry.example.com/team/avatar", TAG="v7", BUILDER="buildah")
    assert res.returncode == 0, res.stderr
    built = [line.split(" -t ")[1].split()[0] for line in res.stdout.splitlines() if " build " in line]
    pushed = [line.split()[-1] for line in res.stdout.splitlines() if line.startswith("buildah push")]
    s = settings.with_image(settings.WorkflowSettings(), registry="registry.example.com/team/avatar", tag="v7")
    expected = [s.image_of(i) for i in ("tracker", "masks", "train")]
    assert built == expected and pushed == expected


def test_build_arguments_reach_the_builder():
    res = _dry_run("train", REGISTRY="r.example/x", TAG="t", BUILDER="podman", TORCH_FLAVOR="cpu",
                   TORCH_CUDA_ARCH_LIST="8.0;9.0", BASE_REGISTRY="mirror.example", BUILD_ARGS="MAX_JOBS=3")
    assert res.returncode == 0, res.stderr
    (line,) = [l for l in res.stdout.splitlines() if l.startswith("podman build")]
    for arg in ("TORCH_FLAVOR=cpu", "TORCH_CUDA_ARCH_LIST=8.0;9.0", "BASE_REGISTRY=mirror.example", "MAX_JOBS=3"):
        assert f"--build-arg {arg}" in line
    assert "images/train/Containerfile" in line and "push" not in res.stdout.split("use them")[0]


def test_unknown_image_is_refused():
    res = _dry_run("trainer", BUILDER="buildah")
    assert res.returncode == 2 and "tracker masks train" in res.stderr


def test_the_flavour_reaches_the_masks_build():
    """The masks image picks its onnxruntime build with the same TORCH_FLAVOR as the torch images."""
    for flavour, env in (("cuda", {}), ("cpu", {"TORCH_FLAVOR": "cpu"})):
        res = _dry_run("masks", REGISTRY="r.example/x", TAG="t", BUILDER="buildah", **env)
        assert res.returncode == 0, res.stderr
        (line,) = [l for l in res.stdout.splitlines() if l.startswith("buildah build")]
        assert f"--build-arg TORCH_FLAVOR={flavour}" in line and "images/masks/Containerfile" in line
    res = _dry_run("masks", BUILDER="buildah", TORCH_FLAVOR="gpu")
    assert res.returncode == 2 and "cuda or cpu" in res.stderr
