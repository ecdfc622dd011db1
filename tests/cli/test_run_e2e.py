"""`avatar run` end to end on a generated clip with the tiny preset (CPU): the whole DAG, resuming
after a SIGKILL with the same outputs, and a face-less video refused at ingest."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from factories.subprocess_env import subprocess_env
from stages.cli import main
from stages.graph import STAGES
from stages.store.local import LocalStore

FRAMES = 48


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A synthetic talking head (stand-in face model), 48 frames at 256 px, ground truth beside it."""
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params, render_video

    out = tmp_path_factory.mktemp("clip") / "talking.mp4"
    model = load_face_model(None)
    spec = SynthSpec(n_frames=FRAMES, size=256, seed=1)
    render_video(model, generate_params(model, spec), out, spec=spec, batch=16)
    return out


def _run_args(clip: Path, store: Path, actor: str) -> list[str]:
    return ["run", "--actor", actor, "--video", str(clip), "--store", str(store), "--preset", "tiny",
            "--device", "cpu", "--jobs", "2"]


def _outputs(store: Path, actor: str) -> dict[str, dict[str, str]]:
    st = LocalStore(store)
    return {s.name: st.get_json(f"actors/{actor}/{s.name}/manifest.json")["outputs"] for s in STAGES}


@pytest.fixture(scope="module")
def finished(clip, tmp_path_factory):
    """One uninterrupted tiny run: (store, actor)."""
    store = tmp_path_factory.mktemp("store")
    assert main(_run_args(clip, store, "synth")) == 0
    return store, "synth"


def test_tiny_run_produces_avatar_preview_report_and_verified_dataset(finished, capsys):
    store, actor = finished
    root = store / "actors" / actor
    for rel in ("avatar/avatar.pt", "avatar/preview.mp4", "avatar/report.json", "avatar/report.md",
                "dataset/tracking.npz", "dataset/checkpoint/00000.frame", "dataset/imgs/00001.jpg"):
        assert (root / rel).is_file(), rel
    n = len(list((root / "dataset" / "checkpoint").glob("*.frame")))
    assert n == FRAMES
    assert main(["verify", str(root / "dataset")]) == 0
    import json

    report = json.loads((root / "avatar" / "report.json").read_text())
    assert report["psnr_mean"] > 15 and report["held_out"], report  # tiny preset: a blurry but real avatar
    # A rerun finds every manifest matching and does nothing.
    capsys.readouterr()
    assert main(_run_args(Path(LocalStore(store).local_path(f"actors/{actor}/input/video.mp4")), store, actor)) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") == len(STAGES), out


def test_kill_mid_run_then_rerun_gives_the_same_outputs(clip, finished, tmp_path):
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "stages", *_run_args(clip, store, "synth")]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    marker = store / "actors" / "synth" / "calibrate" / "manifest.json"
    deadline = time.monotonic() + 600
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed mid-way"
    import os

    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: the runner and its shard workers
    proc.wait(30)
    assert not (store / "actors" / "synth" / "render" / "manifest.json").exists()

    assert main(_run_args(clip, store, "synth")) == 0
    again, reference = _outputs(store, "synth"), _outputs(*finished)

    def data(outputs: dict[str, str]) -> dict[str, str]:  # reports hold timings: metadata, not data
        return {k: v for k, v in outputs.items() if not k.split("/")[-1].startswith("report")}

    for stage in ("ingest", "landmarks", "masks", "calibrate", "track", "assemble"):
        assert set(again[stage]) == set(reference[stage]), stage
        assert data(again[stage]) == data(reference[stage]), f"{stage} outputs differ after kill + rerun"
    assert set(again["train"]) == set(reference["train"]) and set(again["render"]) == set(reference["render"])


def test_video_without_a_face_fails_at_ingest_with_exit_2(tmp_path, capsys):
    import av

    path = tmp_path / "wall.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 256, 256, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(40):
            img = np.full((256, 256, 3), 180, np.uint8) + rng.integers(0, 20, (256, 256, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    code = main(_run_args(path, tmp_path / "store", "wall"))
    err = capsys.readouterr().err
    assert code == 2, err
    line = [x for x in err.splitlines() if x.startswith("avatar: error:")]
    assert len(line) == 1 and "face" in line[0].lower(), err
    assert not (tmp_path / "store" / "actors" / "wall" / "ingest" / "manifest.json").exists()
