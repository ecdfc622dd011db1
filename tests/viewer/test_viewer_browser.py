"""``avatar view`` in a real headless browser: Debian's Chromium driven by playwright (its own browser
download does not work offline, so it is pointed at the system binary). WebGL runs on SwiftShader."""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("viser", reason="viser is in the viewer extra (pip install -e '.[viewer]')")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _middle(png: bytes) -> np.ndarray:
    """The central 30% box of a screenshot, RGB int16 (the GUI panel, 320 px wide, sits at the right edge)."""
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    h, w = a.shape[:2]
    return a[int(h * 0.35):int(h * 0.65), int(w * 0.35):int(w * 0.65)]


def _background(png: bytes) -> np.ndarray:
    """The canvas background colour: a pixel at the left edge, half-way down (nothing is drawn there)."""
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    return a[a.shape[0] // 2, 8]


def _wait_for(page, pred, timeout=15.0) -> bytes:
    """Screenshots of the canvas until ``pred(middle, background)`` holds (AssertionError on timeout)."""
    canvas = page.locator("canvas").first
    t_end = time.monotonic() + timeout
    while True:
        png = canvas.screenshot()
        if pred(_middle(png), _background(png)) or time.monotonic() > t_end:
            assert pred(_middle(png), _background(png)), "the page did not show the expected picture in time"
            return png
        time.sleep(0.3)


def _stable(page, pred, timeout=15.0) -> bytes:
    """A screenshot satisfying ``pred`` that the next one repeats (the page has settled)."""
    prev = _wait_for(page, pred, timeout)
    t_end = time.monotonic() + timeout
    while True:
        time.sleep(0.3)
        png = _wait_for(page, pred, timeout)
        if np.abs(_middle(png) - _middle(prev)).max() <= 3 or time.monotonic() > t_end:
            return png
        prev = png


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        pytest.skip("no system Chromium (apt-get install -y chromium; make setup does it as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_viewer_page_shows_the_head_and_the_jaw_slider_moves_it(toy_avatar, chromium, tmp_path):
    from stages.viewer.server import AvatarViewer, ViewerConfig

    model, surface, tracked = toy_avatar
    viewer = AvatarViewer(model, surface, tracked, config=ViewerConfig(port=_free_port()))
    assert viewer.url.startswith("http://127.0.0.1:")
    stop = threading.Event()
    loop = threading.Thread(target=viewer.run, args=(stop,), daemon=True)
    loop.start()
    try:
        page = chromium.new_page(viewport={"width": 1280, "height": 720})
        page.goto(viewer.url)
        page.wait_for_selector("canvas", timeout=20000)
        page.get_by_text("Connected").first.wait_for(timeout=20000)

        def shows_head(m, bg):
            return (np.abs(m - bg).sum(-1) > 30).mean() > 0.3  # most of the middle is not background

        head = _wait_for(page, shows_head)
        (tmp_path / "head.png").write_bytes(head)
        viewer.splats.visible = False  # the same view without the avatar: background only
        bg = _wait_for(page, lambda m, bg: np.abs(m - bg).sum(-1).max() < 10)
        assert np.abs(_middle(head) - _middle(bg)).sum(-1).mean() > 30
        viewer.splats.visible = True
        before = _stable(page, shows_head)

        updates = viewer.updates
        viewer.jaw.value = 0.6  # the slider, set through viser's API: its callback re-poses the avatar
        moved = lambda m, bg: (np.abs(m - _middle(before)).sum(-1) > 40).mean() > 0.02  # noqa: E731
        opened = _wait_for(page, moved)
        (tmp_path / "jaw.png").write_bytes(opened)
        assert viewer.updates > updates
    finally:
        stop.set()
        loop.join(5)
        viewer.close()
