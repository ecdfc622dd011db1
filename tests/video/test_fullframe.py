"""Full frame: the avatar composited into the source picture (reference vs fast path, the parts
left alone, the frame timeline looped back and forth, the encoded output)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from stages.video.crop_record import CropRecord
from stages.video.fullframe import (Compositor, Feather, FullFrameWriter, composite_rgb_reference, pingpong,
                                    split_planes, weights_reference, yuv420_to_rgb)


def scene(h=120, w=160, side=81, x0=-7, y0=51, seed=0):
    """A smooth source picture (I420 and its RGB), a round avatar render and its alpha."""
    rng = np.random.default_rng(seed)
    rgb = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3)).astype(np.uint8), (9, 9), 3)
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    yy, xx = np.mgrid[:side, :side]
    alpha = np.clip(1.5 - np.hypot(yy - side / 2, xx - side / 2) / (side / 3), 0, 1)
    colour = np.stack([0.8 * np.ones((side, side)), 0.3 + 0.2 * xx / side, 0.5 * yy / side], -1)
    rec = CropRecord(x0=x0, y0=y0, side=side, source_width=w, source_height=h)
    return yuv, yuv420_to_rgb(yuv), colour * alpha[..., None], alpha, rec


def box_mask(rec, h, w):
    m = np.zeros((h, w), bool)
    m[max(0, rec.y0):rec.y0 + rec.side, max(0, rec.x0):rec.x0 + rec.side] = True
    return m


def test_pingpong_loops_back_and_forth():
    assert pingpong(np.arange(12), 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert pingpong(np.arange(3), 1).tolist() == [0, 0, 0]


def test_reference_is_the_source_outside_and_the_alpha_blend_inside():
    yuv, src, premult, alpha, rec = scene()
    out = composite_rgb_reference(src, premult, alpha, rec, Feather(soften=0.0))
    inside = box_mask(rec, *src.shape[:2])
    assert np.array_equal(out[~inside], src[~inside])
    # beyond the ramp the weight is 1: render * alpha + source * (1 - alpha) exactly
    r = int(np.ceil(Feather().ramp_px(rec.side))) + 2
    core = np.zeros_like(inside)
    core[max(0, rec.y0 + r):rec.y0 + rec.side - r, max(0, rec.x0 + r):rec.x0 + rec.side - r] = True
    ys, xs = np.nonzero(core)
    plain = premult[ys - rec.y0, xs - rec.x0] + src[ys, xs] / 255.0 * (1 - alpha[ys - rec.y0, xs - rec.x0, None])
    assert np.abs(out[ys, xs] - np.round(plain * 255)).max() <= 1
    assert (np.abs(out[ys, xs].astype(int) - src[ys, xs]) > 20).any()  # the avatar is there


def test_feather_weights_ramp_from_zero_at_the_box_edge():
    _, _, _, alpha, rec = scene()
    w = weights_reference(alpha, Feather(soften=0.0))
    assert w[0].max() == 0 and w[:, 1].max() == 0 and w[rec.side // 2, rec.side // 2] == 1
    ws = weights_reference(np.ones_like(alpha), Feather())
    assert ws[rec.side // 2, rec.side // 2] == pytest.approx(1.0)
    c = Compositor(rec, 160, 120, "cpu", Feather())
    got = c.weights(torch.tensor(alpha[None], dtype=torch.float32))[0].numpy()
    assert np.abs(got - weights_reference(alpha, Feather())).max() < 1e-5


@pytest.mark.parametrize("x0,y0,side", [(-7, 51, 81), (40, 10, 64), (101, -20, 90)])
def test_fast_path_matches_the_reference_and_leaves_the_rest_alone(x0, y0, side):
    yuv, src, premult, alpha, rec = scene(x0=x0, y0=y0, side=side)
    ref = composite_rgb_reference(src, premult, alpha, rec)
    buf = yuv.copy()
    Compositor(rec, 160, 120, "cpu").composite([buf], torch.tensor(premult[None]), torch.tensor(alpha[None]))
    out = yuv420_to_rgb(buf)
    d = np.abs(out.astype(int) - ref.astype(int))
    assert d.mean() < 0.5 and d.max() <= 8, (d.mean(), d.max())
    inside = box_mask(rec, 120, 160)
    y_in, u_in, v_in = split_planes(yuv, 120, 160)
    y_out, u_out, v_out = split_planes(buf, 120, 160)
    assert np.array_equal(y_out[~inside], y_in[~inside])  # every luma sample outside the box: the source's
    inside_c = inside[::2, ::2] | inside[1::2, 1::2] | inside[::2, 1::2] | inside[1::2, ::2]
    assert np.array_equal(u_out[~inside_c], u_in[~inside_c]) and np.array_equal(v_out[~inside_c], v_in[~inside_c])
    assert (y_out != y_in).sum() > 100


def _decode(path):
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_writer_shows_source_frame_k_looped_back_and_forth(tmp_path):
    """Frame k of the output is source frame k on the 25 fps timeline (read from the number drawn
    into each source frame, outside the crop), looped back and forth; the size is the source's."""
    from fractions import Fraction

    from stages.video.testclip import read_frame_number, write_numbered_clip

    clip = write_numbered_clip(tmp_path / "n.mp4", 30, Fraction(30000, 1001), width=192, height=128)
    rec = CropRecord(x0=100, y0=60, side=80, source_width=192, source_height=128)
    yy, xx = np.mgrid[:80, :80]
    alpha = torch.tensor(np.clip(1.5 - np.hypot(yy - 40, xx - 40) / 25, 0, 1), dtype=torch.float32)
    premult = alpha[..., None] * torch.tensor([0.9, 0.1, 0.1])
    out = tmp_path / "o.mp4"
    with FullFrameWriter(out, clip, rec, crf=0, preset="ultrafast") as ff:
        n = ff.source.n
        total = 2 * n + 3
        for s in range(0, total, 7):
            ks = list(range(s, min(total, s + 7)))
            ff.write(ks, premult.expand(len(ks), -1, -1, -1), alpha.expand(len(ks), -1, -1))
        expect = ff.source.selected[pingpong(np.arange(total), n)].tolist()
    frames = _decode(out)
    assert len(frames) == total and frames[0].shape == (128, 192, 3)
    assert [read_frame_number(f) for f in frames] == expect
    centre = frames[5][100, 140].astype(int)
    assert centre[0] > 180 and centre[1] < 60  # the red avatar is composited at the crop's centre


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_composite_equals_cpu_composite():
    yuv, _, premult, alpha, rec = scene(h=360, w=640, side=300, x0=200, y0=-40)
    cpu, gpu = yuv.copy(), yuv.copy()
    p, a = torch.tensor(premult[None], dtype=torch.float32), torch.tensor(alpha[None], dtype=torch.float32)
    Compositor(rec, 640, 360, "cpu").composite([cpu], p, a)
    Compositor(rec, 640, 360, "cuda").composite([gpu], p.cuda(), a.cuda())
    assert np.abs(cpu.astype(int) - gpu.astype(int)).max() <= 1 and not np.array_equal(cpu, yuv)
