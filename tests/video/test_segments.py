"""stages/video/segments.py: a video encoded as parallel segments and joined is one ordinary H.264 MP4."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from stages.gauss.preview import PreviewWriter
from stages.video.segments import SegmentedWriter, join_segments


def _clip(n: int, h: int = 64, w: int = 96) -> np.ndarray:
    """[n, h, w, 3] uint8: a bright square moving over a gradient (every frame differs)."""
    y, x = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        f = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 60)], -1).astype(np.uint8)
        c = 8 + (3 * i) % (w - 24)
        f[20:36, c:c + 16] = (250, 250, 250)
        frames[i] = f
    return frames


def _decode(path) -> tuple[np.ndarray, list[float], list[bool], float]:
    """Frames [n, h, w, 3], their times (s), key-frame flags, and the stream's duration (s)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames, times, keys = [], [], []
        for fr in c.decode(s):
            frames.append(fr.to_ndarray(format="rgb24"))
            times.append(float(fr.pts * fr.time_base))
            keys.append(bool(fr.key_frame))
        duration = float(s.duration * s.time_base)
    return np.stack(frames), times, keys, duration


@pytest.mark.parametrize("n, segment, workers", [(50, 16, 3), (16, 16, 2), (7, 64, 2), (33, 10, 1)])
def test_joined_segments_decode_to_the_frames_in_order(tmp_path, n, segment, workers):
    frames = _clip(n)
    out = tmp_path / "v.mp4"
    with SegmentedWriter(out, 96, 64, fps=25, crf=12, segment_frames=segment, workers=workers) as w:
        w.write(frames[:5])  # a batch
        for f in frames[5:]:
            w.write(f)  # single frames
    got, times, keys, duration = _decode(out)
    assert got.shape == frames.shape
    # the moving square is where it was drawn in every frame (frames in order, none lost or repeated)
    err = np.abs(got.astype(int) - frames.astype(int)).mean(axis=(1, 2, 3))
    assert err.max() < 4.0, err
    inside = got[:, 20:36, :, 2].mean(1) > 155  # [n, w]: columns of the square (blue 250 there, 60 elsewhere)
    centre = (inside * np.arange(96)).sum(1) / inside.sum(1)
    assert np.abs(centre - [8 + (3 * i) % 72 + 7.5 for i in range(n)]).max() < 1.0, centre
    assert np.allclose(times, np.arange(n) / 25, atol=1e-3)  # 25 fps timestamps across the joins
    assert duration == pytest.approx(n / 25, abs=1e-3)
    assert [i for i, k in enumerate(keys) if k][: -(-n // segment)] == list(range(0, n, segment))
    assert not list(tmp_path.glob(".v.part*"))  # the parts are gone


def test_same_pictures_as_one_encoder(tmp_path):
    frames = _clip(40)
    with PreviewWriter(tmp_path / "one.mp4", 96, 64, crf=12) as w:
        for f in frames:
            w.write(f)
    with SegmentedWriter(tmp_path / "seg.mp4", 96, 64, crf=12, segment_frames=8, workers=4) as w:
        w.write(frames)
    a, *_ = _decode(tmp_path / "one.mp4")
    b, *_ = _decode(tmp_path / "seg.mp4")
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0


def test_memory_is_bounded_the_producer_waits(tmp_path, monkeypatch):
    """At most workers + 1 segments are held: with encoders that cannot finish, the producer blocks."""
    gate = threading.Event()
    held = []
    original = SegmentedWriter._encode

    def slow(self, part, frames):  # noqa: ANN001, ANN202
        held.append(len(frames))
        gate.wait(10)
        original(self, part, frames)

    monkeypatch.setattr(SegmentedWriter, "_encode", slow)
    w = SegmentedWriter(tmp_path / "v.mp4", 96, 64, segment_frames=4, workers=2)
    frames = _clip(40)
    done = threading.Event()

    def produce() -> None:
        w.write(frames)
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    assert not done.wait(1.0)  # blocked: 2 encoding + 1 waiting segments, the fourth cannot be queued
    assert sum(held) <= 3 * 4
    gate.set()
    t.join(10)
    w.close()
    got, *_ = _decode(tmp_path / "v.mp4")
    assert len(got) == 40


def test_an_encoder_error_reaches_the_caller_and_leaves_no_parts(tmp_path, monkeypatch):
    def broken(self, part, frames):  # noqa: ANN001, ANN202
        self._slots.release()
        raise OSError("disk full")

    monkeypatch.setattr(SegmentedWriter, "_encode", broken)
    w = SegmentedWriter(tmp_path / "v.mp4", 96, 64, segment_frames=2, workers=1)
    with pytest.raises(OSError, match="disk full"):
        w.write(_clip(10))
        w.close()
    w.close()
    assert not list(tmp_path.glob(".v.part*"))


def test_no_frames_writes_no_file_and_join_counts_packets(tmp_path):
    with SegmentedWriter(tmp_path / "empty.mp4", 96, 64) as w:
        pass
    assert w.frames == 0 and not (tmp_path / "empty.mp4").exists()  # as PreviewWriter
    parts = []
    for k in range(2):
        p = tmp_path / f"p{k}.mp4"
        with PreviewWriter(p, 96, 64) as pw:
            for f in _clip(5):
                pw.write(f)
        parts.append(p)
    assert join_segments(parts, tmp_path / "j.mp4") == 10
    got, times, _, _ = _decode(tmp_path / "j.mp4")
    assert len(got) == 10 and np.allclose(times, np.arange(10) / 25, atol=1e-3)


def test_workers_are_fewer_for_large_frames():
    """(workers + 1) segments of frames must fit the buffer budget."""
    seg = 250 * 1024 * 512 * 3
    assert SegmentedWriter("/tmp/x.mp4", 1024, 512, workers=8, max_buffer_bytes=5 * seg).workers == 4
    assert SegmentedWriter("/tmp/x.mp4", 1024, 512, workers=8, max_buffer_bytes=seg).workers == 1
    assert SegmentedWriter("/tmp/x.mp4", 64, 64, workers=3).workers == 3
