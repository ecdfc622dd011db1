"""The decoded-frame cache: built once, reused, rebuilt when stale, same bytes as decoding, memory-mapped."""

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from stages.dataset.layout import DatasetLayout
from stages.gauss import frame_cache as fc
from stages.gauss.data import (AvatarFrames, CachedBatches, StepBatchSampler, TrackedSequence, make_loader,
                               prefetch_to_device, training_batches)


@pytest.fixture
def dataset(toy_dataset, tmp_path):
    """A private copy of the toy dataset (tests here rewrite files)."""
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(toy_dataset, root)
    return DatasetLayout(root)


def _frames(layout, indices, res):
    return AvatarFrames(layout, TrackedSequence.load(layout), indices, res, (0.0, 1.0, 0.0))


def test_cache_rows_equal_decoding_and_header(dataset, tmp_path):
    idx = [0, 3, 5, 11, 20]
    cache = fc.build_frame_cache(dataset, idx, 24, tmp_path / "c" / "x.u8", processes=2)  # a real pool of 2
    assert isinstance(cache.array, np.memmap) and cache.array.shape == (5, 24, 24, 6)
    assert cache.path.stat().st_size == fc.HEADER_BYTES + 5 * 24 * 24 * 6
    assert not list(cache.path.parent.glob("*.tmp-*"))
    for r, i in enumerate(idx):
        k = i + 1
        want = np.asarray(Image.open(dataset.image_path(k)).convert("RGB").resize((24, 24), Image.BILINEAR))
        assert np.array_equal(cache.array[r, ..., :3], want)
        assert np.array_equal(cache.array[r], fc.decode_frame(dataset, i, 24))
    h = fc.CacheHeader.read(cache.path)
    assert h.shape == [5, 24, 24, 6] and h.resolution == 24 and h.fingerprint == fc.dataset_fingerprint(dataset, idx)


def test_reuse_then_rebuild_when_a_file_changes(dataset, tmp_path):
    idx = list(range(8))
    c1, built1 = fc.ensure_frame_cache(dataset, idx, 16, tmp_path / "cache", processes=0)
    mtime = c1.path.stat().st_mtime_ns
    c2, built2 = fc.ensure_frame_cache(dataset, idx, 16, tmp_path / "cache", processes=0)
    assert built1 and not built2 and c2.path == c1.path and c2.path.stat().st_mtime_ns == mtime
    # other frames or another resolution: another cache, the first one untouched
    c3, built3 = fc.ensure_frame_cache(dataset, idx[:4], 16, tmp_path / "cache", processes=0)
    assert built3 and c3.path != c1.path
    # rewrite one mask: the cache is stale and rebuilt with the new pixels
    p = dataset.mouth_path(4)
    Image.fromarray(np.full((48, 48), 255, np.uint8)).save(p)
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    assert fc.open_frame_cache(c1.path, dataset, idx, 16) is None
    c4, built4 = fc.ensure_frame_cache(dataset, idx, 16, tmp_path / "cache", processes=0)
    assert built4 and c4.path == c1.path and (c4.array[3, ..., 5] == 255).all()
    # a truncated or foreign file is not trusted
    with open(c4.path, "r+b") as f:
        f.truncate(fc.HEADER_BYTES + 10)
    assert fc.open_frame_cache(c4.path, dataset, idx, 16) is None
    c4.path.write_bytes(b"not a cache")
    assert fc.open_frame_cache(c4.path, dataset, idx, 16) is None


def test_killed_build_leaves_no_cache_and_its_temporary_is_removed(dataset, tmp_path):
    path = tmp_path / "cache" / "frames.u8"
    path.parent.mkdir()
    dead = path.with_name(path.name + ".tmp-999999999")  # no such process
    dead.write_bytes(b"half")
    fc.build_frame_cache(dataset, [0, 1], 16, path, processes=0)
    assert not dead.exists() and path.exists()
    # a missing file is bad input naming the file
    dataset.alpha_path(3).unlink()
    from stages.errors import BadInput

    with pytest.raises(BadInput, match="00003.jpg"):
        fc.build_frame_cache(dataset, [2], 16, tmp_path / "cache" / "other.u8", processes=0)
    assert not list((tmp_path / "cache").glob("other.u8*"))


def test_cached_batches_equal_the_decoding_loader_exactly(dataset, tmp_path):
    idx = list(range(2, 18))
    frames = _frames(dataset, idx, 32)
    cache, _ = fc.ensure_frame_cache(dataset, idx, 32, tmp_path / "cache", processes=0)
    sampler = StepBatchSampler(len(frames), 5, seed=3, start=0, stop=7)  # crosses epochs
    cached = list(prefetch_to_device(CachedBatches(cache, frames, sampler), "cpu", depth=2))
    decoded = list(make_loader(frames, sampler, workers=0))
    assert len(cached) == len(decoded) == 7
    for a, b in zip(cached, decoded):
        assert set(a) == set(b)
        for k in b:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k
        assert torch.equal(frames.ground_truth(a), frames.ground_truth(b))


def test_training_batches_modes_and_order(dataset, tmp_path, monkeypatch):
    frames = _frames(dataset, list(range(12)), 16)
    runs = {}
    for mode in ("on", "off", "auto"):
        it, info = training_batches(frames, StepBatchSampler(12, 4, 0, 2, 9), "cpu", frame_cache=mode,
                                    cache_dir=tmp_path / "fc", workers=0, prefetch=2)
        runs[mode] = (list(it), info)
    assert runs["on"][1].source == "cache" and runs["on"][1].cache_built
    assert runs["auto"][1].source == "cache" and not runs["auto"][1].cache_built  # reused
    assert runs["off"][1].source == "decode"
    for a, b, c in zip(*(runs[m][0] for m in ("on", "off", "auto"))):
        for k in b:
            assert torch.equal(a[k], b[k]) and torch.equal(c[k], b[k]), k
    assert [int(i) for b in runs["on"][0] for i in b["index"]] == \
        [i for b in StepBatchSampler(12, 4, 0, 2, 9) for i in b]
    # no room on the disk: auto falls back to decoding, on insists
    monkeypatch.setattr("stages.gauss.data.has_room", lambda d, n, r: False)
    it, info = training_batches(frames, StepBatchSampler(12, 4, 0, 0, 1), "cpu", frame_cache="auto",
                                cache_dir=tmp_path / "fc3", workers=0)
    assert info.source == "decode" and "no room" in info.notes[0] and len(list(it)) == 1
    it, info = training_batches(frames, StepBatchSampler(12, 4, 0, 0, 1), "cpu", frame_cache="on",
                                cache_dir=tmp_path / "fc3", workers=0)
    assert info.source == "cache"


def test_prefetch_raises_errors_and_stops_early():
    def gen():
        yield {"x": torch.zeros(2)}
        raise RuntimeError("boom in the producer")

    it = prefetch_to_device(gen(), "cpu", depth=2)
    assert torch.equal(next(it)["x"], torch.zeros(2))
    with pytest.raises(RuntimeError, match="boom"):
        next(it)
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield {"i": torch.tensor(i)}
            i += 1

    it = prefetch_to_device(endless(), "cpu", depth=3)
    assert [int(next(it)["i"]) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()  # the thread stops: it ran at most depth + 2 batches ahead
    n = len(produced)
    time.sleep(0.2)
    assert len(produced) == n <= 5 + 3 + 2


def _rss_anon_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon")


def test_memory_stays_bounded_by_the_batches_in_flight(dataset, tmp_path):
    """Iterating over a cache much larger than a batch keeps the process's own (anonymous) memory
    near a few batches: the frames stay in the file's pages (page cache), not in the heap."""
    idx = list(range(24)) * 3  # 72 rows (frames repeated) x 512 x 512 x 6 = 113 MB, 1.6 MB a batch of 1
    res = 512
    cache, _ = fc.ensure_frame_cache(dataset, idx, res, tmp_path / "cache", processes=0)
    frames = _frames(dataset, idx, res)
    cache_mb = cache.array.nbytes / 2 ** 20
    n = len(idx)
    sampler = StepBatchSampler(n, 1, seed=0, start=0, stop=3 * n)  # three epochs
    before = _rss_anon_kb()
    total, grown = 0, {}
    for step, b in enumerate(prefetch_to_device(CachedBatches(cache, frames, sampler), "cpu", depth=2), 1):
        total += int(b["img"][:, ::37, ::37].sum())
        if step % n == 0:
            grown[step // n] = (_rss_anon_kb() - before) / 1024
    assert total > 0
    # a few batches in flight plus allocator slack, never the frames themselves, and no growth per epoch
    assert grown[1] < cache_mb / 4 and grown[3] < grown[1] + 4, (grown, cache_mb)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_prefetch_gives_the_same_batches(dataset, tmp_path):
    idx = list(range(16))
    frames = _frames(dataset, idx, 32)
    sampler = StepBatchSampler(16, 4, 0, 0, 10)
    cpu, _ = training_batches(frames, sampler, "cpu", frame_cache="on", cache_dir=tmp_path / "fc", workers=0)
    gpu, info = training_batches(frames, sampler, "cuda", frame_cache="on", cache_dir=tmp_path / "fc", workers=0)
    dec, _ = training_batches(frames, sampler, "cuda", frame_cache="off", workers=2)
    for a, b, c in zip(cpu, gpu, dec):
        for k in a:
            assert b[k].is_cuda and torch.equal(a[k], b[k].cpu()) and torch.equal(a[k], c[k].cpu()), k


def test_a_started_build_decodes_while_the_caller_works_and_can_be_cancelled(dataset, tmp_path):
    """start_frame_cache forks the decoding processes and returns at once; finish() gives the same
    rows as a build in this process; cancel() leaves neither a cache nor a temporary file."""
    idx = list(range(12))
    got = fc.start_frame_cache(dataset, idx, 20, tmp_path / "cache", processes=2)
    assert isinstance(got, fc.CacheBuild) and got.pool is not None and got.tmp.exists()
    assert not got.path.exists()  # nothing under the final name until finish()
    cache = got.finish()
    ref = fc.build_frame_cache(dataset, idx, 20, tmp_path / "ref" / "r.u8", processes=0)
    assert np.array_equal(np.asarray(cache.array), np.asarray(ref.array))
    # the cache is current now: a second start opens it
    assert isinstance(fc.start_frame_cache(dataset, idx, 20, tmp_path / "cache", processes=2), fc.FrameCache)
    other = fc.start_frame_cache(dataset, idx[:6], 20, tmp_path / "cache", processes=2)
    other.cancel()
    assert not other.path.exists() and not list((tmp_path / "cache").glob("*.tmp-*"))


def test_training_batches_from_a_cache_started_ahead_are_the_same(dataset, tmp_path):
    from stages.gauss.data import start_cache

    idx = list(range(10))
    frames = _frames(dataset, idx, 16)
    started = start_cache(frames, frame_cache="on", cache_dir=tmp_path / "a", workers=2)
    assert isinstance(started.got, fc.CacheBuild)
    a, info_a = training_batches(frames, StepBatchSampler(10, 3, 0, 0, 4), "cpu", frame_cache="on",
                                 cache_dir=tmp_path / "a", workers=2, started=started)
    b, info_b = training_batches(frames, StepBatchSampler(10, 3, 0, 0, 4), "cpu", frame_cache="off")
    assert info_a.source == "cache" and info_a.cache_built and info_b.source == "decode"
    n = 0
    for x, y in zip(a, b):
        assert set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x)
        n += 1
    assert n == 4


def test_train_that_fails_while_the_cache_decodes_leaves_no_temporary(dataset, tmp_path, monkeypatch):
    from stages.gauss import trainer
    from stages.gauss.synthetic import toy_surface

    def broken(*a, **k):
        raise RuntimeError("the avatar could not be built")

    monkeypatch.setattr(trainer, "build_avatar", broken)
    cfg = trainer.TrainConfig(steps=2, batch_size=2, resolution=16, frame_cache="on", workers=2, shell="off")
    with pytest.raises(RuntimeError, match="could not be built"):
        trainer.train(cfg, toy_surface(), dataset, tmp_path / "w", "cpu")
    assert (tmp_path / "w" / "frame-cache").is_dir()  # the build had started
    assert not list((tmp_path / "w" / "frame-cache").glob("*"))


def test_first_use_order_is_the_order_batches_first_ask_for_frames():
    from stages.gauss.data import first_use_order

    assert first_use_order([[3, 1], [1, 0], [2, 3], [4, 4]], 5) == [3, 1, 0, 2, 4]
    assert first_use_order([[2], [2]], 4) == [2]  # never asked for: left out (the build decodes them last)
    sampler = StepBatchSampler(10, 3, seed=1, start=0, stop=50)
    order = first_use_order(sampler, 10)
    assert sorted(order) == list(range(10)) and order[:3] == next(iter(sampler))


def test_rows_of_a_build_are_readable_as_soon_as_they_are_decoded(dataset, tmp_path):
    """A build with decoding processes: the rows of ``order`` go to the first tasks, wait_rows() returns once
    they are decoded and tensor() then holds exactly their bytes, before finish(); the published file is
    byte-identical to a build in this process."""
    idx = list(range(16))
    order = [9, 2, 14]
    build = fc.CacheBuild(dataset, idx, 20, tmp_path / "c" / "x.u8", processes=2, order=order)
    others = [r for r in range(16) if r not in order]
    assert build._chunk_of_row[order].max() < build._chunk_of_row[others].min()  # the first tasks hold them
    build.wait_rows(order)
    rows = build.tensor()
    for r in order:
        assert np.array_equal(rows[r].numpy(), fc.decode_frame(dataset, idx[r], 20))
    cache = build.finish(sync=False)
    ref = fc.build_frame_cache(dataset, idx, 20, tmp_path / "ref" / "r.u8", processes=0)
    assert np.array_equal(np.asarray(cache.array), np.asarray(ref.array)) and np.array_equal(rows.numpy(), ref.array)
    with pytest.raises(ValueError, match="at most once"):
        fc.CacheBuild(dataset, idx, 20, tmp_path / "c" / "y.u8", processes=2, order=[1, 1])


def test_training_starts_on_a_build_under_way_and_publishes_it(dataset, tmp_path):
    from stages.gauss.data import first_use_order, start_cache

    idx = list(range(12))
    frames = _frames(dataset, idx, 16)
    sampler = StepBatchSampler(12, 4, seed=2, start=0, stop=7)
    started = start_cache(frames, frame_cache="on", cache_dir=tmp_path / "a", workers=2,
                          order=first_use_order(sampler, 12))
    build = started.got
    assert isinstance(build, fc.CacheBuild) and build.pool is not None
    it, info = training_batches(frames, sampler, "cpu", frame_cache="on", cache_dir=tmp_path / "a", workers=2,
                                started=started)
    assert info.source == "cache" and info.cache_built
    ref = list(make_loader(frames, StepBatchSampler(12, 4, seed=2, start=0, stop=7), workers=0))
    got = list(it)
    assert len(got) == len(ref) == 7
    for a, b in zip(got, ref):
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert fc.open_frame_cache(build.path, dataset, idx, 16) is not None  # published once every row was decoded
    assert not list((tmp_path / "a").glob("*.tmp-*"))


def test_a_frame_that_cannot_be_decoded_fails_the_batch_that_needs_it(dataset, tmp_path):
    """No batch is ever gathered from rows a failed task did not write: the error (BadInput naming the
    file) reaches the consumer, and the build leaves no temporary file. (A missing file fails before
    any decoding: the cache's fingerprint reads every file's size.)"""
    from stages.errors import BadInput
    from stages.gauss.data import start_cache

    dataset.mouth_path(8).write_bytes(b"not a png")  # frame 7's mouth mask, unreadable
    idx = list(range(12))
    frames = _frames(dataset, idx, 16)
    started = start_cache(frames, frame_cache="on", cache_dir=tmp_path / "a", workers=2)
    it, _ = training_batches(frames, StepBatchSampler(12, 4, seed=0, start=0, stop=6), "cpu", frame_cache="on",
                             cache_dir=tmp_path / "a", workers=2, started=started)
    with pytest.raises(BadInput, match="00008"):
        list(it)
    time.sleep(0.2)
    assert not list((tmp_path / "a").glob("*"))
