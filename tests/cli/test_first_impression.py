"""What a new user feeds `avatar run` first (issue #19, "first impression"): clips made from
wojtek.mp4 as phones and editors write them. Each one works (ingest through the real CLI, tiny
preset) or is refused with one line naming the path the user typed and the fix, exit 2, and the
store as it was."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from stages.cli import main

TB = Fraction(1, 12800)


def store_files(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def make_clip(src: Path, dst: Path, n: int, *, canvas: tuple[int, int] = (256, 256), face_side: int = 256,
              pts_steps: list[int] | None = None, blank_first: int = 0, audio: bool = False,
              pix_fmt: str = "yuv420p") -> Path:
    """``n`` frames: ``blank_first`` grey ones, then wojtek.mp4's frames scaled to ``face_side``
    and centred on a grey ``canvas`` (w, h). ``pts_steps``: the gap before each frame in 1/12800 s
    (cycled; default 512 = 25 fps). ``audio``: a 440 Hz tone beside it (AAC)."""
    import av
    import cv2

    w, h = canvas
    steps = pts_steps or [512]
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.time_base = TB
        s.options = {"preset": "ultrafast", "crf": "20"}
        a = out.add_stream("aac", rate=44100) if audio else None
        if a is not None:
            a.layout = "mono"
        src_frames = inp.decode(video=0)
        pts = 0
        for i in range(n):
            img = np.full((h, w, 3), 128, np.uint8)
            if i >= blank_first:
                face = cv2.resize(next(src_frames).to_ndarray(format="rgb24"), (face_side, face_side),
                                  interpolation=cv2.INTER_AREA)
                y, x = (h - face_side) // 2, (w - face_side) // 2
                img[y:y + face_side, x:x + face_side] = face
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = pts, TB
            pts += steps[i % len(steps)]
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
        if a is not None:
            sr, total = 44100, int(float(pts * TB) * 44100)
            t = np.arange(total) / sr
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for k in range(0, total, 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k:k + 1024]), format="fltp", layout="mono")
                af.sample_rate, af.pts = sr, k
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode():
                out.mux(p)
    return dst


def ingest(tmp_path: Path, clip: Path) -> tuple[int, Path]:
    store = tmp_path / "store"
    code = main(["run", "--actor", "first", "--video", str(clip), "--store", str(store), "--preset", "tiny",
                 "--device", "cpu", "--jobs", "1", "--until", "ingest"])
    return code, store / "actors" / "first" / "ingest"


def report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def test_a_20_frame_clip_in_a_folder_with_spaces_is_one_line_exit_2(tmp_path, wojtek, capsys):
    folder = tmp_path / "my videos (phone)"
    folder.mkdir()
    clip = make_clip(wojtek, folder / "me talking.mp4", 20)
    store = tmp_path / "store"
    store.mkdir()
    (store / "keep.txt").write_text("the user's own file\n")
    before = store_files(store)
    capsys.readouterr()
    code = main(["run", "--actor", "first", "--video", str(clip), "--store", str(store), "--preset", "tiny",
                 "--device", "cpu", "--jobs", "1"])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert code == 2 and len(err) == 1, err
    assert str(clip) in err[0] and "only 20 frames" in err[0] and "longer video" in err[0]
    assert store_files(store) == before
    assert sorted(p.name for p in store.iterdir()) == ["keep.txt"]
    fresh = tmp_path / "new store"  # the first command of a new user: no store folder is left behind
    assert main(["run", "--actor", "first", "--video", str(clip), "--store", str(fresh), "--preset", "tiny",
                 "--device", "cpu", "--jobs", "1"]) == 2
    assert not fresh.exists()


def test_a_portrait_1080x1920_clip_works(tmp_path, wojtek):
    clip = make_clip(wojtek, tmp_path / "portrait.mp4", 30, canvas=(1080, 1920), face_side=720)
    code, out = ingest(tmp_path, clip)
    assert code == 0
    r = report(out)
    assert (r["source"]["width"], r["source"]["height"], r["frames_out"]) == (1080, 1920, 30)
    crop = json.loads((out / "crop.json").read_text())
    # the face sits in the middle third of the picture: the crop is there, not at the top or the padding
    cx, cy = crop["x0"] + crop["side"] / 2, crop["y0"] + crop["side"] / 2
    assert 360 < cx < 720 and 600 < cy < 1320 and 300 < crop["side"] < 1080, crop


def test_an_odd_sized_641x479_clip_works(tmp_path, wojtek):
    clip = make_clip(wojtek, tmp_path / "odd size.mp4", 30, canvas=(641, 479), face_side=400, pix_fmt="yuv444p")
    code, out = ingest(tmp_path, clip)
    assert code == 0
    r = report(out)
    assert (r["source"]["width"], r["source"]["height"], r["frames_out"]) == (641, 479, 30)
    import io

    from PIL import Image

    from stages.frameshard import read_shard_tar

    frames = list(read_shard_tar(out / "frames" / "0000.tar"))
    assert len(frames) == 30
    img = np.asarray(Image.open(io.BytesIO(frames[0][1])))
    assert img.shape == (512, 512, 3) and img.std() > 20  # a picture, not a flat fill


def test_a_variable_frame_rate_clip_is_resampled_and_warns(tmp_path, wojtek):
    """Gaps of 1, 2 and 3 frame times (about 12.5 frames/s on average): 25 fps output as ffmpeg's fps
    filter gives, and a warning that many frames repeat."""
    clip = make_clip(wojtek, tmp_path / "vfr.mp4", 30, pts_steps=[512, 1024, 1536])
    code, out = ingest(tmp_path, clip)
    assert code == 0
    r = report(out)
    assert r["frames_in"] == 30 and r["frames_out"] > 50 and r["duplicated"] == r["frames_out"] - 30
    assert any("repeat the previous one" in w and "variable frame rate" in w for w in r["warnings"]), r["warnings"]


def test_a_clip_with_sound_keeps_it(tmp_path, wojtek):
    clip = make_clip(wojtek, tmp_path / "with sound.mp4", 30, audio=True)
    code, out = ingest(tmp_path, clip)
    assert code == 0
    r = report(out)
    assert r["audio"]["codec"] == "aac" and r["audio"]["samples"] == 30 * 640
    assert (out / "audio.wav").is_file()
    assert not [w for w in r["warnings"] if "repeat" in w or "no face" in w], r["warnings"]  # 256 px: only "soft"


def test_a_clip_that_starts_without_a_face_works_and_says_so(tmp_path, wojtek):
    clip = make_clip(wojtek, tmp_path / "walks in.mp4", 60, blank_first=25)
    code, out = ingest(tmp_path, clip)
    assert code == 0
    r = report(out)
    assert r["frames_out"] == 60
    lead = [w for w in r["warnings"] if w.startswith("no face in about the first")]
    assert len(lead) == 1 and "not trained on" in lead[0], r["warnings"]
    seconds = float(lead[0].split("the first ")[1].split(" s")[0])
    assert 0.5 <= seconds <= 1.2, lead  # 25 grey frames = 1.0 s, sampled at 16 points


@pytest.mark.parametrize("steps, dup, warns", [([512], 0, False), ([512, 1024], 10, False), ([1024], 30, True)])
def test_frame_rate_warning_rule(steps, dup, warns):
    from stages.ingest import frame_rate_warnings

    n_out = 60
    assert bool(frame_rate_warnings(dup, n_out, 25.0 * 512 / np.mean(steps))) == warns


def test_a_folder_as_the_video_is_one_line_exit_2(tmp_path, capsys):
    folder = tmp_path / "my videos"
    folder.mkdir()
    store = tmp_path / "store"
    capsys.readouterr()
    assert main(["run", "--actor", "first", "--video", str(folder), "--store", str(store)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and f"{folder}: a folder, not a video file" in err[0] and "clip.mp4" in err[0], err
    assert not store.exists()
