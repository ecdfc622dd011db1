"""BiSeNet written to load face-parsing.PyTorch's 79999_iter.pth: a stand-in checkpoint with the real
key names and shapes (random weights) loads strictly, exports to ONNX once as the ``parsing`` asset,
runs through the ONNX backend with the torch model's labels; wrong or truncated files are one line, exit 2."""

import numpy as np
import pytest
import torch

from stages.assets import add_asset, asset_path
from stages.cli import main
from stages.errors import BadInput
from stages.masks.backends.bisenet import BiSeNetParsing, normalise
from stages.nets.bisenet import BiSeNet, export_onnx, load_bisenet
from stages.store.local import LocalStore


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Single-threaded torch (the shared CPU machine; see tests/conftest.py)."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A stand-in 79999_iter.pth: BiSeNet's state dict with random weights and BN statistics."""
    torch.manual_seed(0)
    net = BiSeNet()
    state = net.state_dict()
    for k, v in state.items():
        if k.endswith("running_mean"):
            v.normal_(0, 0.1)
        elif k.endswith("running_var"):
            v.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "79999_iter.pth"
    torch.save(state, path)
    return path


def test_key_names_and_shapes_are_the_published_ones():
    sd = BiSeNet().state_dict()
    # 36 convolutions (ResNet-18 20 with 3 downsamples, context path 7, fusion 3, heads 6), no biases,
    # and 31 BatchNorms of 4 tensors each (ResNet 20, context path 7, fusion 1, heads 3)
    assert len([k for k in sd if not k.endswith("num_batches_tracked")]) == 36 + 31 * 4
    assert len([k for k in sd if k.endswith("num_batches_tracked")]) == 31
    for key, shape in {"cp.resnet.conv1.weight": (64, 3, 7, 7), "cp.resnet.layer2.0.downsample.0.weight": (128, 64, 1, 1),
                       "cp.arm32.conv_atten.weight": (128, 128, 1, 1), "cp.conv_avg.conv.weight": (128, 512, 1, 1),
                       "ffm.convblk.conv.weight": (256, 256, 1, 1), "ffm.conv1.weight": (64, 256, 1, 1),
                       "conv_out.conv_out.weight": (19, 256, 1, 1), "conv_out16.conv.conv.weight": (64, 128, 3, 3),
                       "conv_out32.conv_out.weight": (19, 64, 1, 1)}.items():
        assert tuple(sd[key].shape) == shape, key
    assert "cp.resnet.fc.weight" not in sd and not any(k.startswith("sp.") for k in sd)


def test_strict_load_onnx_export_and_backend_agree(checkpoint, tmp_path):
    net = load_bisenet(checkpoint)
    ref = torch.load(checkpoint, weights_only=True)
    torch.testing.assert_close(net.state_dict()["ffm.conv2.weight"], ref["ffm.conv2.weight"])
    onnx_path = export_onnx(net, tmp_path / "bisenet.onnx", size=64)
    rgb = np.random.default_rng(0).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        logits = net(torch.as_tensor(normalise(rgb)))
    parsing = BiSeNetParsing(onnx_path, device="cpu", threads=1)
    onnx_logits = parsing.plain.run(None, {"input": normalise(rgb)})[0]
    np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-4, rtol=1e-4)
    labels = parsing.labels(rgb)
    agree = (labels == logits.argmax(1).numpy()).mean()
    assert agree > 0.999, agree  # ties aside, the same argmax


def test_parsing_asset_from_the_checkpoint_is_exported_once(checkpoint, tmp_path):
    store = LocalStore(tmp_path / "store")
    rec = add_asset(store, "parsing", checkpoint)
    assert rec["file"] == "bisenet.onnx" and rec["source_file"] == "79999_iter.pth"
    assert rec["facts"]["model"] == "bisenet" and rec["facts"]["classes"] == 19
    assert add_asset(store, "parsing", checkpoint) == rec  # found by the source's sha256, not exported again
    path = asset_path(store, "parsing", rec["sha256"], tmp_path / "cache")
    assert BiSeNetParsing(path, device="cpu", threads=1).labels(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, 64, 64)


def test_wrong_and_truncated_checkpoints_are_refused_in_one_line(checkpoint, tmp_path, capsys):
    data = checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match=r"truncated\.pth: not a readable PyTorch checkpoint") as e:
        load_bisenet(truncated)
    assert "\n" not in str(e.value)
    state = torch.load(checkpoint, weights_only=True)
    del state["conv_out.conv_out.weight"]
    state["cp.resnet.fc.weight"] = torch.zeros(1000, 512)
    wrong = tmp_path / "resnet.pth"
    torch.save(state, wrong)
    with pytest.raises(BadInput, match=r"resnet\.pth: not a 19-class face-parsing BiSeNet checkpoint: 1 missing "
                                       r"\(conv_out\.conv_out\.weight\); 1 unexpected") as e:
        load_bisenet(wrong)
    assert "\n" not in str(e.value)
    other_classes = tmp_path / "classes.pth"
    state = torch.load(checkpoint, weights_only=True)
    state["conv_out.conv_out.weight"] = torch.zeros(11, 256, 1, 1)
    torch.save(state, other_classes)
    with pytest.raises(BadInput, match=r"wrong shape \(conv_out\.conv_out\.weight \[11, 256, 1, 1\]"):
        load_bisenet(other_classes)
    store = tmp_path / "s"
    assert main(["assets", "add", "parsing", str(truncated), "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(truncated) in err and len(err.splitlines()) == 1
    assert not store.exists() or not any(store.rglob("asset.json"))


def test_a_checkpoint_without_batchnorm_step_counts_loads(checkpoint, tmp_path):
    state = {k: v for k, v in torch.load(checkpoint, weights_only=True).items() if not k.endswith("num_batches_tracked")}
    old = tmp_path / "old.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, old)  # DataParallel-saved, pre-0.4.1 style
    assert isinstance(load_bisenet(old), BiSeNet)


def test_run_options_choose_the_exported_parsing_model(checkpoint, tmp_path):
    """``avatar run --parsing 79999_iter.pth`` stores the ONNX export and chooses it for the actor."""
    from stages.cli.run_cmd import prepare_actor

    store = LocalStore(tmp_path / "store")
    pipeline = prepare_actor(store, "a", None, None, "tiny", assets={"parsing": checkpoint})
    rec = store.get_json(f"assets/parsing/{pipeline.assets['parsing']}/asset.json")
    assert rec["file"] == "bisenet.onnx" and rec["source_file"] == checkpoint.name
