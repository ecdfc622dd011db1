"""A shard's frames: the selected source frames, in order, duplicates reused, gaps filled."""

from __future__ import annotations

import cv2
import numpy as np

from stages.frameshard import read_shard_tar
from stages.video.crop import CropBox
from stages.video.decode import index_frames, probe
from stages.video.render import render_shard
from stages.video.resample import fps_selection
from stages.video.testclip import read_frame_number, write_numbered_clip


def numbers_in(tar):
    out = []
    for name, data in read_shard_tar(tar):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (64, 64, 3)
        out.append((name, read_frame_number(img)))
    return out


def test_shard_holds_the_selected_frames(tmp_path):
    path = write_numbered_clip(tmp_path / "c.mp4", 50, 12.5)  # slower than 25 fps: every frame twice
    info = probe(path)
    index = index_frames(info)
    selected = fps_selection(index.pts, index.end_pts, info.time_base, 25, info.start_pts)
    assert len(selected) == 100
    numbers = list(range(31, 61))  # a shard from the middle: its worker seeks there
    pts = [int(index.pts[selected[n - 1]]) for n in numbers]
    result = render_shard(info, index, numbers, pts, CropBox(0, 0, 64), tmp_path / "s.tar", size=64)
    assert result.frames == 30 and result.missing == []
    got = numbers_in(tmp_path / "s.tar")
    assert [n for n, _ in got] == [f"{k:05d}.jpg" for k in numbers]
    assert [v for _, v in got] == [int(selected[k - 1]) for k in numbers] == [k // 2 for k in range(30, 60)]


def test_frames_the_decoder_never_produces_repeat_the_previous_one(tmp_path):
    path = write_numbered_clip(tmp_path / "c.mp4", 10, 25)
    info = probe(path)
    index = index_frames(info)
    pts = index.pts[:6].tolist()
    pts[3] += 1  # no frame has this timestamp
    result = render_shard(info, index, list(range(1, 7)), pts, CropBox(0, 0, 64), tmp_path / "s.tar", size=64)
    assert result.missing == [4]
    assert [v for _, v in numbers_in(tmp_path / "s.tar")] == [0, 1, 2, 2, 4, 5]
