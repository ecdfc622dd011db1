"""The parallel dataset writer: chunks cover every frame once; worker processes forked from a parent
that has used torch and OpenCV's thread pool write the same bytes as the calling process, the same
``.frame`` bytes as :func:`write_frame`; every file is checked on the bytes written."""

from __future__ import annotations

import faulthandler

import cv2
import numpy as np
import pytest

from stages.dataset.frame_file import frame_bytes
from stages.dataset.layout import rel_paths
from stages.dataset.writer import Chunk, ChunkWriter, FrameConstants, FrameRows, plan_chunks, write_chunk
from stages.frameshard import write_shard_tar
from stages.store.local import LocalStore

N = 24


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two shards' ingest and masks tars (frames 1..12, 13..24) and rows of parameters."""
    d = tmp_path_factory.mktemp("tars")
    rng = np.random.default_rng(0)
    disc = np.zeros((512, 512), np.uint8)
    cv2.circle(disc, (256, 256), 150, 255, -1)
    tars = []
    for j, (a, b) in enumerate(((1, 13), (13, N + 1))):
        frames = [(f"{k:05d}.jpg", cv2.imencode(".jpg", np.full((512, 512, 3), 10 * k, np.uint8))[1].tobytes())
                  for k in range(a, b)]
        masks = []
        for k in range(a, b):
            mouth = disc.copy() if k != 17 else (disc // 255)  # frame 17's mouth saved 0/1: a finding
            masks += [(f"alpha/{k:05d}.jpg", cv2.imencode(".jpg", disc)[1].tobytes()),
                      (f"parsing/{k:05d}_neckhead.png", cv2.imencode(".png", disc)[1].tobytes()),
                      (f"parsing/{k:05d}_mouth.png", cv2.imencode(".png", mouth)[1].tobytes())]
        write_shard_tar(d / f"f{j}.tar", frames)
        write_shard_tar(d / f"m{j}.tar", masks)
        tars.append((a, b, str(d / f"f{j}.tar"), str(d / f"m{j}.tar")))
    ident6 = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (N, 1))
    rows = FrameRows(0, exp=rng.normal(size=(N, 100)).astype(np.float32), eyes=np.concatenate([ident6, ident6], 1),
                     eyelids=rng.uniform(size=(N, 2)).astype(np.float32), jaw=ident6,
                     R=np.tile(np.eye(3, dtype=np.float32), (N, 1, 1)),
                     t=rng.normal(size=(N, 3)).astype(np.float32),
                     camera={"R": ident6, "t": rng.normal(size=(N, 3)), "fl": np.full((N, 1), 5.8),
                             "pp": np.zeros((N, 2))})
    const = FrameConstants(shape=rng.normal(size=300).astype(np.float32),
                           K=np.array([[1500, 0, 256], [0, 1500, 256], [0, 0, 1]], np.float32))
    return tars, rows, const


def _chunks(tars, rows, workers):
    bounds = [(a, b) for a, b, _, _ in tars]
    return [Chunk(a, b, tars[j][2], tars[j][3], rows.rows(a - 1, b - 1), head)
            for j, a, b, head in plan_chunks(bounds, workers, min_frames=4)]


def test_plan_chunks_covers_every_frame_once():
    bounds = [(1, 1001), (1001, 2001), (2001, 2501)]
    for workers in (1, 4, 16, 64, 200):
        chunks = plan_chunks(bounds, workers)
        frames = [k for _, a, b, _ in chunks for k in range(a, b)]
        assert frames == list(range(1, 2501))
        assert all(b - a >= 32 for _, a, b, _ in chunks)
        assert [a for j, a, _, head in chunks if head] == [1, 1001, 2001]
        assert all(bounds[j][0] <= a < b <= bounds[j][1] for j, a, b, _ in chunks)
    assert 3 * 16 - 3 <= len(plan_chunks(bounds, 16)) <= 3 * 16 + 3


def test_forked_workers_write_what_the_parent_would(inputs, tmp_path):
    tars, rows, const = inputs
    # the parent has a running OpenCV thread pool and torch state, as assemble's process does
    cv2.GaussianBlur(np.zeros((2000, 2000), np.float32), (31, 31), 5)
    import torch

    torch.ones(1000, 1000) @ torch.ones(1000, 1000)
    results = {}
    for workers in (1, 3):
        store = LocalStore(tmp_path / f"w{workers}")
        faulthandler.dump_traceback_later(120, exit=True)  # a deadlocked worker fails the test, not the suite
        try:
            with ChunkWriter(store, "actors/a/dataset", _chunks(tars, rows, workers), const, workers=workers) as w:
                got = list(w.results())
        finally:
            faulthandler.cancel_dump_traceback_later()
        assert len(got) == len(_chunks(tars, rows, workers)) > (1 if workers == 1 else 3)
        results[workers] = ({k: v for r in got for k, v in r.outputs.items()}, sorted(p for r in got for p in r.problems))
    (out1, problems1), (out3, problems3) = results[1], results[3]
    assert out1 == out3 and len(out1) == 5 * N  # image, alpha, two masks and the .frame of every frame
    assert [p.replace("/w1/", "/w3/") for p in problems1] == problems3
    # the one bad mask is named by its store location, with the 0/1 hint
    assert len(problems1) == 1 and "parsing/00017_mouth.png" in problems1[0] and "0/1 instead of 0/255" in problems1[0]
    assert str(tmp_path / "w1") in problems1[0]
    # .frame bytes are those of frame_bytes(make_frame(...)) (what write_frame writes), file for file
    for i in (0, 11, 12, N - 1):
        data = (tmp_path / "w3" / "actors/a/dataset" / rel_paths(i)["frame"]).read_bytes()
        assert data == frame_bytes(rows.frame(i, const))
    img = (tmp_path / "w3" / "actors/a/dataset/imgs/00020.jpg").read_bytes()
    assert cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_GRAYSCALE)[0, 0] in range(195, 206)


def test_checks_find_a_wrong_size_and_a_damaged_frame_source(inputs, tmp_path):
    tars, rows, const = inputs
    small = tmp_path / "small.tar"
    write_shard_tar(small, [("00001.jpg", cv2.imencode(".jpg", np.zeros((256, 256, 3), np.uint8))[1].tobytes()),
                            ("notes.txt", b"stray")])
    store = LocalStore(tmp_path / "s")
    res = write_chunk(store, "ds", Chunk(1, 2, str(small), tars[0][3], rows.rows(0, 1), unnumbered=True), const)
    assert any("imgs/00001.jpg: size 256x256, expected 512x512" in p for p in res.problems)
    assert "imgs/notes.txt" in res.outputs  # written, so that the name check reports it as a stray
    assert set(res.outputs) >= {"checkpoint/00000.frame", "alpha/00001.jpg", "parsing/00001_mouth.png"}


def test_workers_write_to_either_store(inputs, store, tmp_path):
    """Forked workers reopen the store from its URI (a local folder, or S3 with the parent's
    credentials from the environment) and write what the calling process writes."""
    tars, rows, const = inputs
    chunks = _chunks(tars, rows, 2)
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        with ChunkWriter(store, "actors/a/dataset", chunks, const, workers=2) as w:
            got = {k: v for r in w.results() for k, v in r.outputs.items()}
    finally:
        faulthandler.cancel_dump_traceback_later()
    ref = {k: v for c in chunks for k, v in write_chunk(LocalStore(tmp_path / "ref"), "d", c, const).outputs.items()}
    assert got == ref and len(got) == 5 * N
    assert store.get_bytes("actors/a/dataset/checkpoint/00023.frame") == frame_bytes(rows.frame(23, const))
    assert sorted(k.split("/dataset/")[1] for k in store.list("actors/a/dataset/")) == sorted(got)
