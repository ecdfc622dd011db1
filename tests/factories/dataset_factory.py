"""Small valid FlashAvatar datasets and .frame dicts, written with our own writers (for tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_frame_dict(i: int) -> dict:
    from stages.dataset.frame_file import make_frame

    rng = np.random.default_rng(i)
    ident6 = np.array([1, 0, 0, 0, 1, 0], dtype=np.float32)
    return make_frame(i, exp=rng.normal(size=100) * 0.1, shape=np.zeros(300), eyes=np.tile(ident6, 2),
                      eyelids=np.zeros(2), jaw=ident6, R=np.eye(3), t=[0, 0, 1.0],
                      K=[[1500, 0, 256], [0, 1500, 256], [0, 0, 1]],
                      camera={"R": ident6, "t": [0, 0, 1.0], "fl": [5.86], "pp": [0, 0]})


def write_dataset(root: Path, n: int) -> Path:
    import cv2

    from stages.dataset.frame_file import write_frame
    from stages.dataset.layout import DatasetLayout

    lay = DatasetLayout(root)
    for d in (lay.imgs_dir, lay.alpha_dir, lay.parsing_dir, lay.checkpoint_dir):
        d.mkdir(parents=True, exist_ok=True)
    img = np.full((512, 512, 3), 128, np.uint8)
    mask = np.zeros((512, 512), np.uint8)
    mask[100:400, 100:400] = 255
    for i in range(n):
        k = i + 1
        cv2.imwrite(str(lay.image_path(k)), img)
        cv2.imwrite(str(lay.alpha_path(k)), mask)
        cv2.imwrite(str(lay.neckhead_path(k)), mask)
        cv2.imwrite(str(lay.mouth_path(k)), mask)
        write_frame(lay.frame_path(i), make_frame_dict(i))
    return root


