"""Reading the FlashAvatar layout for training."""

import numpy as np
import pytest
import torch
from PIL import Image

from stages.dataset.layout import DatasetLayout
from stages.errors import BadInput
from stages.gauss.data import AvatarFrames, StepBatchSampler, TrackedSequence, check_masks, find_dataset_root, split_frames


def test_upstream_split_and_fraction():
    train, test = split_frames(2000)
    assert test == list(range(1500, 2000)) and train == list(range(1500))
    train, test = split_frames(20000)
    assert train == list(range(10000)) and test[0] == 19500
    train, test = split_frames(30, test_fraction=0.1)
    assert test == [27, 28, 29] and train == list(range(27))
    with pytest.raises(BadInput):
        split_frames(400)


def test_step_sampler_is_a_function_of_the_step():
    full = list(StepBatchSampler(10, 4, seed=1, start=0, stop=9))
    tail = list(StepBatchSampler(10, 4, seed=1, start=5, stop=9))
    assert full[5:] == tail
    flat = [i for b in full[:5] for i in b]  # 20 positions = two epochs, each a permutation
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert full != list(StepBatchSampler(10, 4, seed=2, start=0, stop=9))


def test_step_sampler_repeats_draw_a_frame_that_many_times_an_epoch():
    plain = list(StepBatchSampler(6, 3, seed=4, start=0, stop=4))
    assert list(StepBatchSampler(6, 3, seed=4, start=0, stop=4, repeats=[1] * 6)) == plain  # no repeats: as before
    rep = StepBatchSampler(6, 3, seed=4, start=0, stop=12, repeats=[1, 1, 4, 1, 1, 1])
    flat = [i for b in rep for i in b]  # 36 positions = four epochs of 9
    for e in range(4):
        epoch = flat[9 * e:9 * (e + 1)]
        assert sorted(epoch) == [0, 1, 2, 2, 2, 2, 3, 4, 5]
    tail = list(StepBatchSampler(6, 3, seed=4, start=7, stop=12, repeats=[1, 1, 4, 1, 1, 1]))
    assert list(rep)[7:] == tail  # still a function of the step (resume)


def test_items_composite_the_ground_truth(toy_dataset):
    layout = DatasetLayout(toy_dataset)
    seq = TrackedSequence.load(layout)
    assert len(seq) == 24 and seq.cond.shape == (24, 120) and seq.image_size == (48, 48)
    frames = AvatarFrames(layout, seq, [3, 7], 24, (0.0, 1.0, 0.0))
    item = frames[1]
    assert item["img"].shape == (24, 24, 3) and item["img"].dtype == torch.uint8 and item["mouth"].shape == (24, 24)
    gt_t = frames.ground_truth({k: v[None] for k, v in item.items()})[0]
    assert int(item["index"]) == 7
    # checkpoint 7 pairs with image 8; compare against compositing the files by hand
    img = np.asarray(Image.open(layout.image_path(8)).resize((24, 24), Image.BILINEAR), np.float32) / 255
    a = np.asarray(Image.open(layout.alpha_path(8)).resize((24, 24), Image.BILINEAR), np.float32)[..., None] / 255
    nh = np.asarray(Image.open(layout.neckhead_path(8)).resize((24, 24), Image.BILINEAR), np.float32)[..., None] / 255
    bg = np.array([0, 1, 0], np.float32)
    gt = (img * a + bg * (1 - a)) * nh + bg * (1 - nh)
    assert np.abs(gt_t.numpy() - gt).max() < 1 / 255 + 1e-6
    assert torch.allclose(item["K"], torch.tensor(seq.K[7]) * torch.tensor([[0.5], [0.5], [1.0]]))
    assert gt_t[0, 0].tolist() == [0.0, 1.0, 0.0]  # background corner


def test_loader_workers_give_the_same_batches(toy_dataset):
    from stages.gauss.data import make_loader

    layout = DatasetLayout(toy_dataset)
    frames = AvatarFrames(layout, TrackedSequence.load(layout), list(range(12)), 16, (1.0, 1.0, 1.0))
    runs = [list(make_loader(frames, StepBatchSampler(12, 3, 0, 0, 5), workers=w)) for w in (0, 2)]
    for a, b in zip(*runs):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(runs[1]) == 5 and runs[1][0]["img"].shape == (3, 16, 16, 3)


def test_masks_saved_as_0_1_are_rejected(toy_dataset, tmp_path):
    layout = DatasetLayout(toy_dataset)
    check_masks(layout, 1)
    bad = DatasetLayout(tmp_path)
    (tmp_path / "parsing").mkdir()
    Image.fromarray(np.ones((8, 8), np.uint8)).save(bad.neckhead_path(1))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad.mouth_path(1))
    with pytest.raises(BadInput, match="0/255"):
        check_masks(bad, 1)


def test_find_dataset_root(toy_dataset):
    paths = sorted(p for p in toy_dataset.rglob("*") if p.is_file())
    layout = find_dataset_root(paths)
    assert layout.root == toy_dataset and layout.checkpoint_dir == toy_dataset / "checkpoint"
    with pytest.raises(BadInput):
        find_dataset_root([p for p in paths if p.suffix != ".frame"])


def test_batched_meta_equals_the_items(toy_dataset):
    layout = DatasetLayout(toy_dataset)
    frames = AvatarFrames(layout, TrackedSequence.load(layout), [4, 9, 2, 17], 24, (0.0, 1.0, 0.0))
    meta = frames.meta(torch.tensor([2, 0, 3]))
    for b, j in enumerate([2, 0, 3]):
        item = frames[j]
        for k, v in meta.items():
            assert v[b].dtype == item[k].dtype and torch.equal(v[b], item[k]), k
    assert meta["index"].tolist() == [2, 4, 17] and meta["K"].shape == (3, 3, 3)

