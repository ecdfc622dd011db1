"""The masks stage on wojtek.mp4 with the matting asset made from a RobustVideoMatting checkpoint (a
stand-in rvm_mobilenetv3.pth with the real key names and shapes, exported to ONNX when added): the
stage runs its ONNX RVM backend, and each frame's alpha is our torch network's pha on the same
ingested frames, run in order with the recurrent state carried."""

import numpy as np
import torch

from stages.assets import add_asset
from stages.config import PipelineConfig
from stages.masks.encode import alpha_name
from stages.nets.rvm import load_rvm
from stages.runner.context import actor_key
from stages.runner.run import run_stage
from factories.rvm_checkpoint import save_standin
from masks.test_stage import _check_format, _ingested, _read_masks


def test_masks_stage_runs_the_exported_checkpoint(wojtek, actor_factory, tmp_path, one_thread):
    pth = save_standin(tmp_path / "rvm_mobilenetv3.pth", "mobilenetv3", 5)
    n = 4
    store, shards = actor_factory(wojtek["frames"][:n], wojtek["points"][:n], wojtek["ok"][:n], shard_size=4)
    rec = add_asset(store, "matting", pth)
    assert rec["file"] == "rvm_mobilenetv3.onnx"
    pipe = PipelineConfig(stages={"masks": {"batch_size": 1, "workers": 1, "onnx_device": "cpu", "parsing": "default"}},
                          assets={"matting": rec["sha256"]})
    assert run_stage("masks", "a", store, pipeline=pipe, device="cpu").status == "ran"
    m = store.get_json(actor_key("a", "masks", "shards", "0000.manifest.json"))
    assert m["stats"]["matting"] == "rvm"
    arrays = _check_format(_read_masks(store, "a", shards), range(1, n + 1))
    decoded = _ingested(store, "a", shards)
    net = load_rvm(pth)
    states = [torch.zeros(1, 1, 1, 1)] * 4
    with torch.no_grad():
        for k in range(1, n + 1):
            src = torch.as_tensor(decoded[k]).permute(2, 0, 1)[None].float() / 255
            _, pha, *states = net(src, *states, downsample_ratio=1.0)
            want = pha[0, 0].numpy()
            got = arrays[alpha_name(k)].astype(np.float32) / 255
            assert want.std() > 0.01  # a matte with structure to compare
            assert np.abs(got - want).mean() < 0.01, k  # JPEG-stored alpha
            assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.98, k
