"""``avatar run --lpips-term``: FlashAvatar's LPIPS term is off by default (measured: it trades
PSNR and SSIM for LPIPS, docs/identity.md) and this flag sets FlashAvatar's weight; without
``--lpips-vgg`` it is refused (the one-line case is in test_bad_input_sweep.py)."""

from pathlib import Path

import pytest

from stages.cli.run_cmd import _run_overrides
from stages.errors import BadInput
from stages.gauss.trainer import FLASHAVATAR_LPIPS_WEIGHT, TrainConfig


def test_lpips_term_flag_sets_flashavatars_weight():
    assert TrainConfig().lpips_weight == 0.0
    assert _run_overrides(False, False, None) is None
    assert _run_overrides(False, True, Path("vgg16.ckpt")) == {"train": {"lpips_weight": FLASHAVATAR_LPIPS_WEIGHT}}
    assert _run_overrides(True, True, Path("vgg16.ckpt")) == {"render": {"full_frame": True},
                                                              "train": {"lpips_weight": 0.05}}
    with pytest.raises(BadInput, match="--lpips-vgg"):
        _run_overrides(False, True, None)
