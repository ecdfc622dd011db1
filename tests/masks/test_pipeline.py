"""compute_masks: RVM streams inside a shard agree with one long stream; every frame comes out once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from stages.masks.backends.rvm import RvmMatting
from stages.masks.encode import alpha_name, decode_gray
from stages.masks.pipeline import MaskSettings, compute_masks


def _video(n: int, size: int = 64) -> dict[int, bytes]:
    """A smoothly moving blob, as JPEGs numbered from 1."""
    out = {}
    yy, xx = np.mgrid[0:size, 0:size]
    for k in range(1, n + 1):
        cx = size / 2 + size / 6 * np.sin(k / 7)
        img = np.zeros((size, size, 3), np.uint8)
        img[..., 0] = (255 * np.exp(-((xx - cx) ** 2 + (yy - size / 2) ** 2) / (2 * (size / 6) ** 2))).astype(np.uint8)
        img[..., 1] = 80
        out[k] = cv2.imencode(".jpg", img)[1].tobytes()
    return out


def _alphas(jpegs, numbers, model, batch, warmup) -> np.ndarray:
    settings = MaskSettings(batch_size=batch, rvm_warmup=warmup, neck_skin=False)
    with ThreadPoolExecutor(2) as pool:
        members = compute_masks(jpegs, numbers, lambda k: None, RvmMatting(model, "cpu"), None, settings, pool)
    assert sorted(members) == list(numbers)
    return np.stack([decode_gray(dict(members[k])[alpha_name(k)]).astype(np.float32) for k in numbers])


def test_streams_match_one_long_stream(standin_models):
    jpegs = _video(72)
    numbers = range(1, 73)
    one = _alphas(jpegs, numbers, standin_models["rvm"], batch=1, warmup=8)
    same = _alphas(jpegs, numbers, standin_models["rvm"], batch=4, warmup=18)  # streams of >= 72: still one
    assert np.abs(same - one).max() <= 2
    three = _alphas(jpegs, numbers, standin_models["rvm"], batch=3, warmup=6)  # 3 streams of 24 frames
    assert np.abs(three - one).max() <= 3  # the stream seams (frames 25 and 49) were warmed up
    cold = _alphas(jpegs, numbers, standin_models["rvm"], batch=3, warmup=0)
    assert np.abs(cold[24] - one[24]).max() > 10  # a cold stream start at frame 25 shows
    assert np.abs(cold[:24] - one[:24]).max() <= 2


def test_shard_tail_warms_the_first_stream(standin_models):
    jpegs = _video(40)
    whole = _alphas(jpegs, range(1, 41), standin_models["rvm"], batch=1, warmup=8)
    tail = {k: v for k, v in jpegs.items() if k > 12}  # frames 13..20 are the previous shard's tail
    second = _alphas(tail, range(21, 41), standin_models["rvm"], batch=1, warmup=8)
    assert np.abs(second - whole[20:]).max() <= 3


def test_default_matting_with_bisenet_parsing(standin_models):
    from stages.masks.backends.bisenet import BiSeNetParsing
    from stages.masks.backends.mediapipe_default import SelfieMatting
    from stages.masks.encode import decode_rgb, mouth_name, neckhead_name

    frames = np.full((3, 512, 512, 3), 200, np.uint8)
    cv2.ellipse(frames[0], (256, 230), (100, 130), 0, 0, 360, (210, 160, 140), -1)
    frames[1:] = frames[0]
    jpegs = {k: cv2.imencode(".jpg", frames[k - 1])[1].tobytes() for k in (1, 2, 3)}
    parser = BiSeNetParsing(standin_models["bisenet"], "cpu")
    matting = SelfieMatting()
    with ThreadPoolExecutor(2) as pool:
        members = compute_masks(jpegs, [1, 2, 3], lambda k: None, matting, parser, MaskSettings(batch_size=2),
                                pool)
    matting.close()
    labels = parser.labels_reference(np.stack([decode_rgb(jpegs[k]) for k in (1, 2, 3)]))
    for k in (1, 2, 3):
        m = dict(members[k])
        assert np.array_equal(decode_gray(m[neckhead_name(k)]) > 0, parser.neckhead_lut[labels[k - 1]] > 0)
        assert np.array_equal(decode_gray(m[mouth_name(k)]) > 0, labels[k - 1] == 11)
        assert decode_gray(m[alpha_name(k)]).shape == (512, 512)
