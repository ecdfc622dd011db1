"""`avatar demo` on the CPU (the demo preset on ../shared/data/wojtek.mp4): a recognisable face,
preview at 256 px or more, held-out PSNR >= 25 dB. Slow (minutes on 2 cores): `-m slow`."""

from __future__ import annotations

import json
import time

import pytest

from stages.cli import main

pytestmark = pytest.mark.slow


def test_demo_preset_on_wojtek(wojtek, tmp_path, capsys):
    import av

    t0 = time.monotonic()
    assert main(["demo", "--store", str(tmp_path / "store"), "--device", "cpu"]) == 0
    seconds = time.monotonic() - t0
    root = tmp_path / "store" / "actors" / "demo-wojtek-demo"
    report = json.loads((root / "avatar" / "report.json").read_text())
    train = json.loads((root / "avatar" / "train_report.json").read_text())
    with av.open(str(root / "avatar" / "preview.mp4")) as c:
        height = c.streams.video[0].height
    print(json.dumps({"seconds": round(seconds, 1), "psnr_mean": report["psnr_mean"], "preview_height": height,
                      "held_out": train["held_out"], "budget": train["budget"]}))
    assert height >= 256
    assert report["psnr_mean"] >= 25.0, report["psnr_mean"]
    assert train["held_out"]["frames"] == 40
