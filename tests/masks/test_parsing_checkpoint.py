"""The masks stage on wojtek.mp4 with the parsing asset made from a face-parsing.PyTorch checkpoint
(a stand-in 79999_iter.pth with the real key names and shapes, exported to ONNX when added): the
stage runs its ONNX backend, and the neckhead/mouth masks are the class mapping of our torch
BiSeNet's labels on the same ingested frames."""

import numpy as np
import pytest
import torch

from stages.assets import add_asset
from stages.config import PipelineConfig
from stages.masks.backends.bisenet import normalise
from stages.nets.bisenet import BiSeNet, load_bisenet
from stages.runner.context import actor_key
from stages.runner.run import run_stage
from stages.masks.encode import mouth_name, neckhead_name
from masks.test_stage import _check_format, _ingested, _read_masks


@pytest.mark.slow  # BiSeNet at 512x512 on a CPU: about 40 s
def test_masks_stage_runs_the_exported_checkpoint(wojtek, actor_factory, tmp_path, one_thread):
    torch.manual_seed(3)
    pth = tmp_path / "79999_iter.pth"
    torch.save(BiSeNet().state_dict(), pth)
    n = 4
    store, shards = actor_factory(wojtek["frames"][:n], wojtek["points"][:n], wojtek["ok"][:n], shard_size=4)
    rec = add_asset(store, "parsing", pth)
    assert rec["file"] == "bisenet.onnx"
    pipe = PipelineConfig(stages={"masks": {"batch_size": 2, "workers": 1, "onnx_device": "cpu"}},
                          assets={"parsing": rec["sha256"]})
    assert run_stage("masks", "a", store, pipeline=pipe, device="cpu").status == "ran"
    m = store.get_json(actor_key("a", "masks", "shards", "0000.manifest.json"))
    assert m["stats"]["parsing"] == "bisenet"
    arrays = _check_format(_read_masks(store, "a", shards), range(1, n + 1))
    decoded = _ingested(store, "a", shards)
    net = load_bisenet(pth)
    with torch.no_grad():
        labels = net(torch.as_tensor(normalise(np.stack([decoded[k] for k in range(1, n + 1)])))).argmax(1).numpy()
    for k in range(1, n + 1):
        lab = labels[k - 1]
        agree = ((arrays[neckhead_name(k)] > 0) == np.isin(lab, [*range(1, 16), 17])).mean()
        assert agree > 0.999, agree
        assert ((arrays[mouth_name(k)] > 0) == (lab == 11)).mean() > 0.999
