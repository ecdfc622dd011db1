"""25 fps frame selection: the fast path against the step-by-step oracle, and both against the real
ffmpeg binary (``-vf fps=25``) on generated clips whose frames carry their own numbers."""

from __future__ import annotations

import subprocess
from fractions import Fraction

import numpy as np
import pytest

from stages.video.decode import index_frames, iter_frames, probe
from stages.video.resample import fps_selection, select_frames, select_frames_reference, to_output_ticks
from stages.video.testclip import read_frame_number, write_numbered_clip


def ffmpeg_fps25(path, width: int, height: int) -> np.ndarray:
    """Frames [M,H,W,3] of ``ffmpeg -i path -vf fps=25`` (upright: ffmpeg autorotates)."""
    import imageio_ffmpeg

    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-vf", "fps=25",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=60)
    return np.frombuffer(out.stdout, dtype=np.uint8).reshape(-1, height, width, 3)


def test_rounding_is_nearest_with_halves_away_from_zero():
    tb = Fraction(1, 50)  # one input tick is half an output tick at 25 fps
    pts = np.array([-3, -2, -1, 0, 1, 2, 3, 4, 5], dtype=np.int64)
    assert to_output_ticks(pts, tb).tolist() == [-2, -1, -1, 0, 1, 1, 2, 2, 3]
    big = np.array([10**12 + 7], dtype=np.int64)  # exact for large values (no float rounding)
    assert to_output_ticks(big, Fraction(1, 90000))[0] == round(Fraction(10**12 + 7, 90000) * 25)


def test_fast_selection_equals_reference_on_random_timelines():
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        ticks = np.sort(rng.integers(-5, 60, size=n))
        end = int(ticks[-1] + rng.integers(-3, 6))
        assert select_frames(ticks, end).tolist() == select_frames_reference(ticks, end).tolist()
    # non-monotonic timestamps fall back to the oracle
    ticks = np.array([0, 3, 2, 5])
    assert select_frames(ticks, 7).tolist() == select_frames_reference(ticks, 7).tolist()


def test_reference_duplicates_and_drops():
    # 12.5 fps source: every frame shown twice; 50 fps source: every other frame dropped
    assert select_frames_reference(np.array([0, 2, 4]), 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert select_frames_reference(np.array([0, 0, 1, 1, 2, 2]), 3).tolist() == [1, 3, 5]


VFR_PTS = np.concatenate([[0], np.cumsum(np.random.default_rng(0).integers(15, 75, size=47))])

CASES = {
    "25": dict(n=30, fps=25),
    "29.97": dict(n=50, fps=Fraction(30000, 1001)),
    "30": dict(n=47, fps=30),
    "60": dict(n=77, fps=60),
    "50": dict(n=33, fps=50),
    "vfr": dict(n=48, fps=30, pts=VFR_PTS, time_base=Fraction(1, 1000)),
    "rot90": dict(n=20, fps=30, rotation=90),
    "rot180": dict(n=14, fps=Fraction(30000, 1001), rotation=180),
    "rot270": dict(n=20, fps=60, rotation=270),
}


@pytest.mark.parametrize("case", list(CASES))
def test_selection_matches_ffmpeg(tmp_path, case):
    spec = dict(CASES[case])
    n, fps = spec.pop("n"), spec.pop("fps")
    path = write_numbered_clip(tmp_path / f"{case}.mp4", n, fps, **spec)
    info = probe(path)
    index = index_frames(info)
    assert len(index) == n
    assert info.rotation == spec.get("rotation", 0)
    selected = fps_selection(index.pts, index.end_pts, info.time_base, 25, info.start_pts)

    ref = ffmpeg_fps25(path, info.width, info.height)
    rotation = spec.get("rotation", 0)
    ffmpeg_sources = [read_frame_number(f, rotation) for f in ref]
    assert len(selected) == len(ref)
    assert selected.tolist() == ffmpeg_sources  # the clip's frame i shows number i

    # Our decoder yields the same upright pixels ffmpeg shows for those frames.
    ours = dict(iter_frames(info, index, index.pts[selected]))
    for k in range(0, len(selected), 5):
        mine = ours[int(index.pts[selected[k]])]
        assert mine.shape == ref[k].shape
        assert np.abs(mine.astype(int) - ref[k].astype(int)).mean() < 2.0


def test_b_frames_and_other_containers_match_ffmpeg(tmp_path):
    import av

    from stages.video.testclip import number_image

    for ext in ("mkv", "mov"):
        path = tmp_path / f"bf.{ext}"
        with av.open(str(path), "w") as out:
            s = out.add_stream("libx264", rate=Fraction(30000, 1001))
            s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
            s.options = {"bf": "3", "crf": "10", "g": "30"}
            for i in range(40):
                for p in s.encode(av.VideoFrame.from_ndarray(number_image(i, 96, 64), format="rgb24")):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)
        info = probe(path)
        index = index_frames(info)
        selected = fps_selection(index.pts, index.end_pts, info.time_base, 25, info.start_pts)
        assert selected.tolist() == [read_frame_number(f) for f in ffmpeg_fps25(path, 96, 64)]


@pytest.mark.parametrize("offset", ["0.23", "0.02", "-0.13"])
def test_audio_first_and_edit_lists_match_ffmpeg(tmp_path, offset):
    """Video starting after the audio (ffmpeg's command line fills the gap with copies of the
    first frame) or cut by an edit list (leading packets discarded) still gives ffmpeg's frames."""
    import imageio_ffmpeg

    clip = write_numbered_clip(tmp_path / "v.mp4", 45, Fraction(30000, 1001))
    path = tmp_path / "av.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                    "-itsoffset", offset, "-i", str(clip), "-map", "0:a", "-map", "1:v", "-c:v", "copy", "-c:a", "aac",
                    "-t", "1.6", str(path)], check=True, timeout=60)
    info = probe(path)
    index = index_frames(info)
    selected = fps_selection(index.pts, index.end_pts, info.time_base, 25, info.start_pts)
    first = read_frame_number(next(iter_frames(info, index, index.pts[:1]))[1])  # edit lists hide leading frames
    assert (first > 0) == offset.startswith("-")
    assert (selected + first).tolist() == [read_frame_number(f) for f in ffmpeg_fps25(path, 96, 64)]
    if offset == "0.23":
        assert selected[:7].tolist() == [0] * 7  # 6 duplicates fill 0 .. 0.23 s
        filter_only = fps_selection(index.pts, index.end_pts, info.time_base, 25, info.start_pts, cli_fill=False)
        assert filter_only.tolist() == selected[6:].tolist()
