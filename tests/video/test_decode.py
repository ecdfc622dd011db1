"""Probing, indexing and streaming decode (rotation, seeking) on generated clips; bad files."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from stages.errors import BadInput
from stages.video.decode import index_frames, iter_frames, probe, upright
from stages.video.testclip import read_frame_number, write_numbered_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # keyframe every 12 frames: sparse requests seek, dense ones decode forward
    return write_numbered_clip(tmp_path_factory.mktemp("clip") / "c.mp4", 60, 30)


def test_probe_and_index(clip):
    info = probe(clip)
    assert (info.codec, info.width, info.height, info.rotation) == ("h264", 96, 64, 0)
    assert abs(info.avg_fps - 30) < 1e-6
    index = index_frames(info)
    assert len(index) == 60
    assert np.all(np.diff(index.pts) > 0)
    assert index.keyframe[0] and 3 <= index.keyframe.sum() <= 8
    step = int(index.pts[1] - index.pts[0])
    assert index.end_pts == int(index.pts[-1]) + step  # last frame's pts + its duration
    assert float(index.end_pts * info.time_base) == pytest.approx(2.0)


@pytest.mark.parametrize("wanted", [[0, 59], [5, 6, 7, 40, 41], list(range(60)), [33], [58, 2]])
def test_iter_frames_yields_exactly_the_wanted_frames(clip, wanted):
    info = probe(clip)
    index = index_frames(info)
    got = [(pts, read_frame_number(img)) for pts, img in iter_frames(info, index, index.pts[wanted])]
    assert [n for _, n in got] == sorted(set(wanted))
    assert [p for p, _ in got] == index.pts[sorted(set(wanted))].tolist()


def test_rotated_clip_is_decoded_upright(tmp_path):
    path = write_numbered_clip(tmp_path / "r.mp4", 6, 25, rotation=90)
    info = probe(path)
    assert (info.rotation, info.width, info.height, info.coded_width) == (90, 64, 96, 96)
    index = index_frames(info)
    frames = list(iter_frames(info, index, index.pts))
    assert frames[0][1].shape == (96, 64, 3)
    assert [read_frame_number(img, 90) for _, img in frames] == list(range(6))


def test_upright_rotates_counter_clockwise():
    img = np.arange(6).reshape(2, 3, 1)
    assert upright(img, 90)[:, :, 0].tolist() == [[2, 5], [1, 4], [0, 3]]
    assert upright(img, 0) is img


def test_bad_files(tmp_path):
    import av

    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    with pytest.raises(BadInput, match="notes.mp4: not a video file"):
        probe(text)

    ok = write_numbered_clip(tmp_path / "ok.mp4", 5, 25)
    unknown = tmp_path / "unknown.mp4"
    unknown.write_bytes(ok.read_bytes().replace(b"avc1", b"zzzz"))  # a codec no decoder knows
    with pytest.raises(BadInput, match="unsupported video codec"):
        probe(unknown)

    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
    with pytest.raises(BadInput, match="zero frames"):
        probe(empty)

    audio = tmp_path / "voice.m4a"
    with av.open(str(audio), "w") as out:
        s = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in list(s.encode(frame)) + list(s.encode()):
            out.mux(p)
    with pytest.raises(BadInput, match="no video stream"):
        probe(audio)


def test_variable_frame_rate_index(tmp_path):
    pts = [0, 40, 70, 150, 160, 300]
    path = write_numbered_clip(tmp_path / "v.mp4", 6, 25, pts=pts, time_base=Fraction(1, 1000))
    info = probe(path)
    index = index_frames(info)
    secs = [float(p * info.time_base) for p in index.pts]
    assert secs == pytest.approx([p / 1000 for p in pts])


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_roi_conversion_matches_whole_frame_conversion(tmp_path, rotation):
    from stages.video.crop import CropBox, cut
    from stages.video.decode import coded_rect_to_display, display_rect_to_coded, frame_roi, iter_decoded

    rng = np.random.default_rng(rotation)
    path = tmp_path / "noise.mp4"
    import av

    with av.open(str(path), "w") as out:  # smooth random picture: colour conversion is tested everywhere
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 96, "yuv420p"
        s.options = {"crf": "8"}
        if rotation:
            s.set_display_rotation(rotation)
        img = np.kron(rng.integers(0, 255, size=(12, 20, 3)), np.ones((8, 8, 1))).astype(np.uint8)
        for p in list(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24"))) + list(s.encode()):
            out.mux(p)
    info = probe(path)
    index = index_frames(info)
    for crop in (CropBox(11, 7, 41), CropBox(-13, -9, 70), CropBox(info.width - 30, info.height - 20, 50)):
        rect = (crop.x0, crop.y0, crop.x0 + crop.side, crop.y0 + crop.side)
        assert coded_rect_to_display(display_rect_to_coded(rect, rotation, 160, 96), rotation, 160, 96) == rect
        for _, frame in iter_decoded(info, index, index.pts[:1]):
            whole = upright(frame.to_ndarray(format="rgb24"), rotation)
            roi, x0, y0 = frame_roi(frame, info, rect)
            assert roi.shape[0] <= whole.shape[0] and roi.shape[1] <= whole.shape[1]
            a = cut(roi, CropBox(crop.x0 - x0, crop.y0 - y0, crop.side), 64).astype(int)
            b = cut(whole, crop, 64).astype(int)
            assert np.abs(a - b).mean() < 1.5 and np.abs(a - b).max() < 12
