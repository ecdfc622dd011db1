"""The GPU warm-up of a local run: which stages it warms, that it runs beside the caller and never
raises, that ``AVATAR_GPU_WARMUP=0`` turns it off; and calibrate's hook solving its tiny problem."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from stages.config import PipelineConfig
from stages.graph import BY_NAME
from stages.runner.context import actor_key
from stages.runner.manifest import MANIFEST
from stages.runner.schedule import Demand, warm_up_pending
from stages.runner.warm_up import start_warm_up


def test_hooks_run_in_a_background_thread_and_failures_are_kept_not_raised():
    seen, release = [], threading.Event()

    def ok(config, device):
        release.wait(5)  # the caller goes on while the hook works
        seen.append((config, device, threading.current_thread().name))

    def broken(config, device):
        raise RuntimeError("no such device")

    mods = [("calibrate", SimpleNamespace(warm_up=ok), "cfg-c"), ("track", SimpleNamespace(warm_up=broken), "cfg-t"),
            ("ingest", SimpleNamespace(), "cfg-i")]  # no hook: not a job
    warm = start_warm_up(mods, "cuda")
    assert [name for name, _ in warm.jobs] == ["calibrate", "track"]
    assert seen == []  # start_warm_up returned before the hook finished
    release.set()
    warm.join(10)
    assert seen == [("cfg-c", "cuda", "gpu-warm-up")]
    assert set(warm.seconds) == {"calibrate"} and warm.errors == {"track": "RuntimeError: no such device"}
    assert start_warm_up([("ingest", SimpleNamespace(), None)]) is None


def test_only_unfinished_stages_on_a_cuda_device_with_a_hook_are_warmed(tmp_path, monkeypatch):
    from stages.store.local import LocalStore

    st = LocalStore(tmp_path / "store")
    decls = [BY_NAME[n] for n in ("ingest", "calibrate", "track")]
    pipeline = PipelineConfig()
    cuda = {"ingest": Demand("ingest", ()), "calibrate": Demand("calibrate", ("landmarks",), 1),
            "track": Demand("track", ("calibrate",), 1)}
    monkeypatch.setattr("stages.runner.warm_up.WarmUp.start", lambda self: self)  # which jobs, not running them
    warm = warm_up_pending(st, "a", pipeline, decls, cuda)
    assert [name for name, _ in warm.jobs] == ["calibrate"]  # ingest runs on the CPU, track has no hook
    on_cpu = {n: Demand(n, ()) for n in cuda}
    assert warm_up_pending(st, "a", pipeline, decls, on_cpu) is None  # --device cpu, or no GPU
    st.put_bytes(actor_key("a", "calibrate", MANIFEST), b"{}")
    assert warm_up_pending(st, "a", pipeline, decls, cuda) is None  # calibrate has finished: nothing to warm
    monkeypatch.setenv("AVATAR_GPU_WARMUP", "0")
    assert warm_up_pending(st, "b", pipeline, decls, cuda) is None  # turned off


def test_calibrates_warm_up_solves_its_tiny_problem(one_thread):
    import stages.calibrate as calibrate

    calibrate.warm_up(calibrate.Config(), "cpu")  # the same code path as on CUDA; raises on any fault


@pytest.mark.gpu
def test_calibrates_warm_up_on_the_gpu_leaves_the_stage_working():
    import torch

    import stages.calibrate as calibrate

    calibrate.warm_up(calibrate.Config(), "cuda")
    a = torch.eye(6, dtype=torch.float64, device="cuda") * 2
    assert torch.allclose(torch.linalg.cholesky(a), a.sqrt())
