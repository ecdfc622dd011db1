"""stages/drive/encode.py: the drive's writers work beside the render loop; side_by_side.mp4 pairs each
avatar frame with the driver's crop of the same frame."""

from __future__ import annotations

import av
import numpy as np
import pytest

from stages.drive.encode import BackgroundWriter, side_by_side_composer


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    return img[:size, :size]


def test_side_by_side_pairs_each_frame_with_its_driver_crop_in_order():
    crops = iter([np.full((8, 8, 3), 10 * i, np.uint8) for i in range(5)])
    compose = side_by_side_composer(crops, 8, _fit)
    avatar = np.stack([np.full((8, 8, 3), 200 + i, np.uint8) for i in range(3)])
    out = compose(avatar)
    assert out.shape == (3, 8, 16, 3)
    assert [int(f[0, 0, 0]) for f in out] == [0, 10, 20]  # the driver on the left, frames 0-2
    assert [int(f[0, 8, 0]) for f in out] == [200, 201, 202]  # the avatar on the right
    out = compose(avatar)  # frames 3-5: the driver has only 3 and 4, then black
    assert [int(f[0, 0, 0]) for f in out] == [30, 40, 0]


def test_background_writer_composes_in_its_thread_and_writes_the_video(tmp_path):
    n = 20
    crops = iter([np.full((32, 32, 3), 5 * i, np.uint8) for i in range(n)])
    path = tmp_path / "sbs.mp4"
    with BackgroundWriter(path, 64, 32, crf=10, compose=side_by_side_composer(crops, 32, _fit)) as w:
        for start in range(0, n, 6):
            w.write(np.full((min(6, n - start), 32, 32, 3), 250, np.uint8))
    assert w.frames == n
    with av.open(str(path)) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(got) == n and got[0].shape == (32, 64, 3)
    left = np.array([g[:, :32].mean() for g in got])
    assert np.abs(left - 5 * np.arange(n)).max() < 3  # crop i beside avatar frame i
    assert min(g[:, 32:].mean() for g in got) > 240


class _Failing:
    frames = 0
    aborted = False

    def write(self, frames):  # noqa: ANN001, ANN201
        raise OSError("no space left on device")

    def close(self):  # noqa: ANN201
        raise AssertionError("a failed writer is aborted, not closed")

    def abort(self):  # noqa: ANN201
        self.aborted = True


def test_a_sink_error_reaches_the_render_loop_and_aborts_the_sink():
    sink = _Failing()
    w = BackgroundWriter(sink=sink)
    w.write(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(OSError, match="no space"):
        w.close()
    assert sink.aborted
