"""Reading upstream outputs: keyframe images from an ingest shard tar."""

import numpy as np
import pytest


def test_read_frames_reads_only_the_wanted_members(tmp_path):
    """The keyframe reader returns exactly the wanted frames of a shard tar (any order asked), as the
    images were written, and refuses a missing one."""
    import io
    import tarfile

    import cv2

    from stages.errors import BadInput
    from stages.tracking.stage_io import read_frames

    rng = np.random.default_rng(0)
    imgs = {k: rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for k in range(1, 11)}
    path = tmp_path / "0000.tar"
    with tarfile.open(path, "w") as tar:
        for k, img in imgs.items():
            data = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()
            info = tarfile.TarInfo(f"{k:05d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    got = read_frames(path, [7, 2, 9])
    assert sorted(got) == [2, 7, 9]
    for k in (2, 7, 9):
        np.testing.assert_array_equal(got[k], imgs[k])
    with pytest.raises(BadInput, match="missing"):
        read_frames(path, [3, 12])
