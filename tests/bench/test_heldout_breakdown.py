"""bench/heldout_breakdown.py's pieces: the region split covers every pixel once, and the bench-only
splits hold out as many frames as the default one, none of them trained on."""

from __future__ import annotations


import numpy as np

from bench_script import load_bench

def _bench():
    return load_bench("heldout_breakdown")


def test_regions_partition_the_image():
    b = _bench()
    s = 64
    fg = np.zeros((s, s), bool)
    fg[10:60, 16:48] = True  # the head, down to the bottom edge
    mesh = np.zeros((s, s), bool)
    mesh[20:40, 20:44] = True  # the face mesh inside it
    regs = b.regions(fg, mesh, chin_row=40.0, band_px=2)
    assert len(regs) == len(b.REGIONS)
    count = np.sum([r.astype(int) for r in regs], 0)
    assert (count == 1).all()  # disjoint and covering
    band, face, hair, neck, bg = regs
    assert band[10, 30] and band[30, 16] and not band[30, 30]  # the outline, not the middle
    assert face[30, 30] and hair[15, 30] and neck[50, 30] and bg[5, 5]
    assert not hair[50, 30] and not neck[15, 30]  # split at the chin's row


def test_bench_splits_hold_out_the_default_number_of_untrained_frames():
    b = _bench()
    from stages.gauss.data import choose_split

    tail = choose_split(400)
    for kind in ("tail", "middle", "interleave"):
        s = b.split_override(kind)(400)
        assert len(s.test) == len(tail.test) == 40
        assert not set(s.test) & set(s.train) and len(s.train) == 360
    assert b.split_override("middle")(400).test == list(range(180, 220))
    assert b.split_override("interleave")(400).test[:3] == [5, 15, 25]
