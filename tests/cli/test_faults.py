"""Faults injected into real `avatar run`s (tiny preset, CPU, a generated clip): SIGKILL at seeded
random moments in each stage, the S3 server killed and restarted mid-stage, two runs for one actor
at once, Ctrl-C. After each: no process of the run alive 2 s later, no scratch folder left once a
rerun ends, and a rerun's outputs equal an uninterrupted run's where the stage is deterministic."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from factories.subprocess_env import sigint_as_at_a_terminal, subprocess_env
from processes import kill_session, wait_until_gone
from stages.cli import main
from stages.graph import STAGES
from stages.store.base import Store
from stages.store.local import LocalStore
from stages.store.uri import open_store

pytestmark = pytest.mark.slow

FRAMES = 48
DETERMINISTIC = ("ingest", "landmarks", "masks", "calibrate", "track", "assemble")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params, render_video

    out = tmp_path_factory.mktemp("clip") / "talking.mp4"
    model = load_face_model(None)
    spec = SynthSpec(n_frames=FRAMES, size=256, seed=1)
    render_video(model, generate_params(model, spec), out, spec=spec, batch=16)
    return out


def _args(clip: Path, store: str, actor: str, *extra: str) -> list[str]:
    return ["run", "--actor", actor, "--video", str(clip), "--store", store, "--preset", "tiny", "--device", "cpu",
            "--jobs", "2", *extra]


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory) -> Store:
    """One uninterrupted tiny run."""
    store = tmp_path_factory.mktemp("reference") / "s"
    assert main(_args(clip, str(store), "synth")) == 0
    return LocalStore(store)


def outputs(store: Store, actor: str, stages=tuple(s.name for s in STAGES)) -> dict[str, dict[str, str]]:
    """Each stage's output digests; reports (which hold timings) left out."""
    out = {}
    for name in stages:
        o = store.get_json(f"actors/{actor}/{name}/manifest.json")["outputs"]
        out[name] = {k: v for k, v in o.items() if not k.split("/")[-1].startswith("report")}
    return out


class Run:
    """``python -m stages ARGS`` in its own session, stderr followed line by line."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "stages", *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                                     preexec_fn=sigint_as_at_a_terminal)
        self.lines: list[str] = []
        self.stage: str | None = None
        self._started: dict[str, float] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stdout = ""

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if " avatar.run: stage " in line:
                self.stage = line.split(" avatar.run: stage ", 1)[1].split(":", 1)[0]
                self._started[self.stage] = time.monotonic()

    def wait_for_stage(self, name: str, timeout: float = 600) -> bool:
        """Wait until stage ``name`` has started; False if the run ended first."""
        deadline = time.monotonic() + timeout
        while name not in self._started and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return name in self._started

    def wait(self, timeout: float = 900) -> int:
        self.stdout = self.proc.stdout.read()
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        return rc

    @property
    def errors(self) -> list[str]:
        return [x for x in self.lines if x.startswith("avatar: ")]


def _scratch_left(scratch: Path) -> list[str]:
    return sorted(p.name for p in scratch.iterdir() if p.name.startswith("avatar-"))


def test_sigkill_in_each_stage_then_rerun(clip, reference, tmp_path):
    """The run is killed (SIGKILL of the run's process only: its workers must go by themselves) at a
    seeded random moment after each stage starts; each rerun resumes; the last one finishes."""
    rng = random.Random(21)
    store = tmp_path / "store"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = subprocess_env({"AVATAR_SCRATCH": str(scratch), "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"})
    killed_in = []
    for decl in STAGES:
        run = Run(_args(clip, str(store), "synth"), env)
        try:
            if not run.wait_for_stage(decl.name):
                pytest.fail(f"the run ended before {decl.name}: {run.lines[-5:]}")
            time.sleep(rng.uniform(0.1, 2.5))
            if run.proc.poll() is not None:
                continue  # it finished meanwhile (the last stages are short)
            stage_at_kill = run.stage
            os.kill(run.proc.pid, signal.SIGKILL)
            run.proc.wait(30)
            left = wait_until_gone(run.proc.pid, 2.0)
            assert left == [], f"processes of the run killed in {stage_at_kill} alive 2 s after the kill: {left}"
            killed_in.append(stage_at_kill)
        finally:
            kill_session(run.proc.pid)
    assert len(set(killed_in)) >= 5, killed_in
    final = Run(_args(clip, str(store), "synth"), env)
    assert final.wait() == 0, final.lines[-10:]
    assert _scratch_left(scratch) == [], "scratch folders of killed runs left behind"
    again, ref = outputs(LocalStore(store), "synth"), outputs(reference, "synth")
    for name in DETERMINISTIC:
        assert again[name] == ref[name], f"{name} outputs differ after kills and reruns"
    for name in ("train", "render"):  # not bit-deterministic on a CPU: the same files
        assert set(again[name]) == set(ref[name]), name
    print("killed in:", killed_in)


def test_s3_server_killed_mid_stage_exit_75_then_rerun_finishes(clip, reference, tmp_path):
    from s3server import SeaweedServer

    server = SeaweedServer(tmp_path / "seaweed").start()
    try:
        env = subprocess_env({**server.env(), "AVATAR_S3_CONFIG": "/nonexistent", "OMP_NUM_THREADS": "1",
                              "AVATAR_SCRATCH": str(tmp_path / "scratch")})
        (tmp_path / "scratch").mkdir()
        for k, v in server.env().items():
            os.environ[k] = v
        os.environ["AVATAR_S3_CONFIG"] = "/nonexistent"
        open_store("s3://faults").ensure_bucket()
        argv = _args(clip, "s3://faults", "synth", "--until", "landmarks")
        run = Run(argv, env)
        try:
            assert run.wait_for_stage("landmarks")
            time.sleep(0.2)  # landmarks of the 48-frame clip take about a second on 2 workers
            server.kill()
            rc = run.wait(300)
            assert rc == 75, run.lines[-10:]
            assert len(run.errors) == 1 and "retry" in run.errors[0], run.errors
            assert wait_until_gone(run.proc.pid, 2.0) == []
        finally:
            kill_session(run.proc.pid)
        server.start()
        again = Run(argv, env)
        assert again.wait(600) == 0, again.lines[-10:]
        st = open_store("s3://faults")
        assert outputs(st, "synth", ("ingest", "landmarks")) == outputs(reference, "synth", ("ingest", "landmarks"))
        assert not st.exists(".locks/synth.json"), "the lease was not released"
        assert _scratch_left(tmp_path / "scratch") == []
    finally:
        server.stop()
        for k in list(server.env()) + ["AVATAR_S3_CONFIG"]:
            os.environ.pop(k, None)


def test_two_runs_for_one_actor(clip, reference, tmp_path):
    """The second `avatar run` is refused with exit 75 naming the first; a third that waits gets the
    lock when the first ends and finds everything done; the result is that of a single run."""
    store = str(tmp_path / "store")
    env = subprocess_env({"OMP_NUM_THREADS": "1"})
    argv = _args(clip, store, "synth", "--until", "landmarks")
    first = Run(argv, env)
    try:
        assert first.wait_for_stage("ingest")
        second = Run(argv, env)
        assert second.wait(120) == 75, second.lines[-5:]
        assert len(second.errors) == 1 and f"pid {first.proc.pid}" in second.errors[0], second.errors
        assert "busy" in second.errors[0]
        third = Run(argv, {**env, "AVATAR_LOCK_WAIT": "600"})
        assert first.wait(600) == 0, first.lines[-5:]
        assert third.wait(600) == 0, third.lines[-5:]
        assert third.stdout.count("skipped") == 2, third.stdout
    finally:
        kill_session(first.proc.pid)
    assert outputs(LocalStore(store), "synth", ("ingest", "landmarks")) == outputs(reference, "synth",
                                                                                   ("ingest", "landmarks"))


def test_ctrl_c_says_what_finished_and_how_to_resume(clip, tmp_path):
    store = str(tmp_path / "store")
    argv = _args(clip, store, "synth", "--until", "landmarks")
    run = Run(argv, subprocess_env({"OMP_NUM_THREADS": "1"}))
    try:
        assert run.wait_for_stage("landmarks")
        done = Path(store) / "actors" / "synth" / "ingest" / "manifest.json"  # landmarks starts beside ingest
        deadline = time.monotonic() + 600
        while not done.exists() and run.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # landmarks of the 48-frame clip's one shard take about a second once ingest wrote it
        os.killpg(run.proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
        assert run.wait(120) == 130
        assert wait_until_gone(run.proc.pid, 2.0) == []
    finally:
        kill_session(run.proc.pid)
    assert not any("Traceback" in x for x in run.lines), run.lines
    assert len(run.errors) == 1, run.lines
    line = run.errors[0]
    assert "interrupted" in line and "finished: ingest" in line and "resume with: avatar run --actor synth" in line
    assert main(argv) == 0  # the command it names resumes
