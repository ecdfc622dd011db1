"""Every bad-input case through the CLI: exit 2, exactly one line on stderr naming the path (or the
value) the user typed, and the store byte-identical before and after (every file hashed)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from factories.subprocess_env import subprocess_env
from stages.cli import main

FRAMES = 48


def store_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden ones included), by relative path."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _png(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)
    return path


def _faceless_clip(path: Path) -> Path:
    import av

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
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from stages.face.flame_file import write_fake_flame_pkl
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params, render_video

    d = tmp_path_factory.mktemp("inputs")
    clip = d / "talking.mp4"
    model = load_face_model(None)
    spec = SynthSpec(n_frames=FRAMES, size=256, seed=1)
    render_video(model, generate_params(model, spec), clip, spec=spec, batch=16)
    notes = d / "notes.txt"
    notes.write_text("not a video\n")
    return {"clip": clip, "notes": notes, "png": _png(d / "generic_model.png"),
            "pkl": write_fake_flame_pkl(d / "generic_model.pkl", seed=3, n_vertices=400, n_faces=700),
            "wall": _faceless_clip(d / "wall.mp4"), "missing": d / "no-such-video.mp4"}


@pytest.fixture(scope="module")
def store(files, tmp_path_factory) -> Path:
    """A store where a refused upload did not use up the actor name: a text file as ``--video`` is
    refused, then the same ``--actor`` with the real clip runs (ingest, tiny preset)."""
    store = tmp_path_factory.mktemp("store") / "s"
    assert main(["run", "--actor", "done", "--video", str(files["notes"]), "--store", str(store)]) == 2
    assert store_digest(store) == {}
    assert main(["run", "--actor", "done", "--video", str(files["clip"]), "--store", str(store), "--preset", "tiny",
                 "--device", "cpu", "--jobs", "1", "--until", "ingest"]) == 0
    assert (store / "actors/done/ingest/manifest.json").is_file()
    return store


def test_a_refused_upload_does_not_use_up_the_actor_name(store, files):
    stored = store / "actors" / "done" / "input" / "video.mp4"
    assert stored.read_bytes() == files["clip"].read_bytes()


def _cases(f: dict[str, Path], s: Path) -> list[tuple[str, list[str], str]]:
    """(case, argv, what the one error line must name)."""
    run = ["run", "--store", str(s), "--device", "cpu", "--preset", "tiny"]
    return [
        ("path as actor", [*run, "--actor", "../evil", "--video", str(f["clip"])], "'../evil'"),
        ("actor with a space", [*run, "--actor", "Roman Smith", "--video", str(f["clip"])], "'Roman Smith'"),
        ("stage: path as actor", ["stage", "ingest", "--actor", "../evil", "--store", str(s)], "'../evil'"),
        ("submit: actor with a space", ["submit", "--actor", "Roman Smith", "--video", str(f["clip"])],
         "'Roman Smith'"),
        ("text file as video", [*run, "--actor", "fresh", "--video", str(f["notes"])], str(f["notes"])),
        ("missing video", [*run, "--actor", "fresh", "--video", str(f["missing"])], str(f["missing"])),
        ("no video for a new actor", [*run, "--actor", "fresh"], "--video"),
        ("png as --flame", [*run, "--actor", "fresh", "--video", str(f["clip"]), "--flame", str(f["png"])],
         str(f["png"])),
        ("flame without its embedding", [*run, "--actor", "fresh", "--video", str(f["clip"]), "--flame",
                                         str(f["pkl"])], str(f["pkl"])),
        ("text file as --matting", [*run, "--actor", "fresh", "--video", str(f["clip"]), "--matting",
                                    str(f["notes"])], str(f["notes"])),
        ("other preset for a finished actor", ["run", "--store", str(s), "--device", "cpu", "--actor", "done",
                                               "--preset", "full"], "--preset full"),
        ("other video for a finished actor", [*run, "--actor", "done", "--video", str(f["wall"])], str(f["wall"])),
        ("unknown preset", ["run", "--store", str(s), "--actor", "fresh", "--video", str(f["clip"]), "--preset",
                            "huge"], "--preset huge"),
        ("unknown --until", [*run, "--actor", "fresh", "--video", str(f["clip"]), "--until", "trian"], "--until trian"),
        ("LPIPS term without VGG weights", [*run, "--actor", "fresh", "--video", str(f["clip"]), "--lpips-term"],
         "--lpips-vgg"),
        ("unknown device", ["run", "--store", str(s), "--actor", "fresh", "--video", str(f["clip"]), "--device",
                            "gpu"], "--device gpu"),
        ("unknown store scheme", ["run", "--store", "ftp://host/x", "--actor", "fresh", "--video", str(f["clip"])],
         "ftp://host/x"),
        ("store is a file", ["run", "--store", str(f["notes"]), "--actor", "fresh", "--video", str(f["clip"])],
         str(f["notes"])),
        ("stage without a video", ["stage", "ingest", "--actor", "fresh", "--store", str(s)], str(s)),
        ("unknown stage", ["stage", "trian", "--actor", "done", "--store", str(s)], "'trian'"),
        ("assets: png as flame", ["assets", "add", "flame", str(f["png"]), "--store", str(s)], str(f["png"])),
        ("assets: unknown kind", ["assets", "add", "flam", str(f["pkl"]), "--store", str(s)], "'flam'"),
        ("video without a face (refused at ingest)", [*run, "--actor", "wall", "--video", str(f["wall"]), "--jobs",
                                                       "1"], str(f["wall"])),
    ]


CASE_NAMES = [c[0] for c in _cases({k: Path(k) for k in ("clip", "notes", "png", "pkl", "wall", "missing")},
                                   Path("s"))]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, files, store, capsys):
    argv, names = next((a, n) for c, a, n in _cases(files, store) if c == case)
    before = store_digest(store)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("avatar: error: ") and names in lines[0], lines[0]
    assert "/actors/" not in lines[0] or case == "stage without a video", "names the store's copy, not the user's file"
    assert store_digest(store) == before, "a refused command changed the store"


def test_png_as_flame_is_one_line_from_a_real_process(files, tmp_path):
    """The whole stderr of the process (logging included) is one line."""
    proc = subprocess.run([sys.executable, "-m", "stages", "run", "--actor", "a", "--video", str(files["clip"]),
                           "--flame", str(files["png"]), "--store", str(tmp_path / "s"), "--device", "cpu"],
                          capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and str(files["png"]) in proc.stderr, proc.stderr
    assert not (tmp_path / "s").exists()

