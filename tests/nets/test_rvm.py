"""RobustVideoMatting written to load rvm_mobilenetv3.pth / rvm_resnet50.pth: the structure has the
published key names, shapes and parameter counts; a stand-in checkpoint with those keys (random
weights) loads strictly, exports to ONNX with the official signature, and the export, run by
onnxruntime and by the masks stage's RVM backend, gives the torch model's outputs frame after frame
with the recurrent state carried; wrong or truncated files are refused in one line, exit 2."""

import numpy as np
import pytest
import torch

from stages.assets import add_asset, asset_path
from stages.cli import main
from stages.errors import BadInput
from stages.masks.backends.rvm import RvmMatting
from stages.masks.onnx_models import validate_rvm
from stages.nets.bisenet import BiSeNet
from stages.nets.rvm import STATE_CHANNELS, MattingNetwork, export_onnx, load_rvm
from stages.store.local import LocalStore
from factories.rvm_checkpoint import save_standin


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Single-threaded torch (the shared CPU machine; see tests/conftest.py)."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A stand-in rvm_mobilenetv3.pth: the full-size network's state dict, random weights."""
    return save_standin(tmp_path_factory.mktemp("ckpt") / "rvm_mobilenetv3.pth", "mobilenetv3", 0)


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    return export_onnx(load_rvm(checkpoint), tmp_path_factory.mktemp("onnx") / "rvm.onnx", size=(64, 64))


def _ort(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_key_names_shapes_and_sizes_are_the_published_ones():
    with torch.device("meta"):
        nets = {v: MattingNetwork(v) for v in ("mobilenetv3", "resnet50")}
    # parameter counts of RVM's two published networks (3.749 M and 26.890 M)
    assert sum(p.numel() for p in nets["mobilenetv3"].parameters()) == 3_748_633
    assert sum(p.numel() for p in nets["resnet50"].parameters()) == 26_890_461
    sd = nets["mobilenetv3"].state_dict()
    shapes = {
        "backbone.features.0.0.weight": (16, 3, 3, 3), "backbone.features.0.1.running_var": (16,),
        "backbone.features.1.block.0.0.weight": (16, 1, 3, 3),  # no expansion: depthwise first
        "backbone.features.2.block.0.0.weight": (64, 16, 1, 1),
        "backbone.features.4.block.2.fc1.weight": (24, 72, 1, 1), "backbone.features.4.block.2.fc2.bias": (72,),
        "backbone.features.5.block.2.fc1.weight": (32, 120, 1, 1),
        "backbone.features.13.block.1.0.weight": (672, 1, 5, 5), "backbone.features.13.block.2.fc1.weight": (168, 672, 1, 1),
        "backbone.features.15.block.3.0.weight": (160, 960, 1, 1), "backbone.features.16.0.weight": (960, 160, 1, 1),
        "aspp.aspp1.0.weight": (128, 960, 1, 1), "aspp.aspp1.1.weight": (128,), "aspp.aspp2.1.weight": (128, 960, 1, 1),
        "decoder.decode4.gru.ih.0.weight": (128, 128, 3, 3), "decoder.decode4.gru.hh.0.weight": (64, 128, 3, 3),
        "decoder.decode3.conv.0.weight": (80, 171, 3, 3), "decoder.decode3.gru.ih.0.bias": (80,),
        "decoder.decode2.conv.0.weight": (40, 107, 3, 3), "decoder.decode1.conv.0.weight": (32, 59, 3, 3),
        "decoder.decode1.gru.hh.0.weight": (16, 32, 3, 3),
        "decoder.decode0.conv.0.weight": (16, 35, 3, 3), "decoder.decode0.conv.4.running_mean": (16,),
        "project_mat.conv.weight": (4, 16, 1, 1), "project_mat.conv.bias": (4,), "project_seg.conv.weight": (1, 16, 1, 1),
        "refiner.box_filter.weight": (4, 1, 3, 3), "refiner.conv.0.weight": (16, 24, 1, 1),
        "refiner.conv.4.weight": (16,), "refiner.conv.6.weight": (4, 16, 1, 1), "refiner.conv.6.bias": (4,),
    }
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s, k
    assert "backbone.features.1.block.0.1.weight" in sd and "backbone.features.1.block.2.0.weight" not in sd
    assert "backbone.features.17.0.weight" not in sd and not any(k.startswith(("backbone.classifier", "decoder.avgpool"))
                                                                 for k in sd)
    assert "refiner.box_filter.bias" not in sd and "aspp.aspp2.1.bias" not in sd
    rs = nets["resnet50"].state_dict()
    for k, s in {"backbone.conv1.weight": (64, 3, 7, 7), "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
                 "backbone.layer3.5.conv2.weight": (256, 256, 3, 3), "backbone.layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
                 "aspp.aspp1.0.weight": (256, 2048, 1, 1), "decoder.decode4.gru.ih.0.weight": (256, 256, 3, 3),
                 "decoder.decode3.conv.0.weight": (128, 256 + 512 + 3, 3, 3), "decoder.decode1.conv.0.weight": (32, 64 + 64 + 3, 3, 3)
                 }.items():
        assert tuple(rs[k].shape) == s, k
    assert "backbone.fc.weight" not in rs and "backbone.layer3.6.conv1.weight" not in rs


def test_strict_load_and_states_have_rvms_shapes(checkpoint):
    net = load_rvm(checkpoint)
    ref = torch.load(checkpoint, weights_only=True)
    torch.testing.assert_close(net.state_dict()["decoder.decode2.gru.hh.0.weight"], ref["decoder.decode2.gru.hh.0.weight"])
    src = torch.rand(2, 3, 80, 112)
    with torch.no_grad():
        fgr, pha, *rec = net(src, *[torch.zeros(1, 1, 1, 1)] * 4, downsample_ratio=1.0)
    assert fgr.shape == (2, 3, 80, 112) and pha.shape == (2, 1, 80, 112)
    assert [tuple(r.shape) for r in rec] == [(2, c, 80 // s, 112 // s) for c, s in zip(STATE_CHANNELS["mobilenetv3"],
                                                                                         (2, 4, 8, 16))]
    assert 0 < float(pha.mean()) < 1 and float(pha.std()) > 1e-3  # a stand-in that does not saturate


def _torch_steps(net, frames, ratio):
    rec = [torch.zeros(1, 1, 1, 1)] * 4
    outs = []
    with torch.no_grad():
        for src in frames:
            o = net(src, *rec, downsample_ratio=ratio)
            rec = list(o[2:])
            outs.append([t.numpy() for t in o])
    return outs


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_onnx_export_equals_torch_frame_after_frame(checkpoint, exported, ratio):
    """Three frames at a size other than the traced one (not a multiple of 16), states fed back."""
    net = load_rvm(checkpoint)
    gen = torch.Generator().manual_seed(1)
    frames = [torch.rand(2, 3, 72, 88, generator=gen) for _ in range(3)]
    want = _torch_steps(net, frames, ratio)
    sess = _ort(exported)
    rec = [np.zeros((1, 1, 1, 1), np.float32)] * 4
    for t, src in enumerate(frames):
        got = sess.run(None, {"src": src.numpy(), "r1i": rec[0], "r2i": rec[1], "r3i": rec[2], "r4i": rec[3],
                              "downsample_ratio": np.array([ratio], np.float32)})
        assert [g.shape for g in got] == [w.shape for w in want[t]]
        for name, g, w in zip(("fgr", "pha", "r1o", "r2o", "r3o", "r4o"), got, want[t]):
            np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-4, err_msg=f"{name} at frame {t}")
        rec = got[2:]
    with torch.no_grad():  # the graph path in torch agrees as well
        ref = net(frames[0], *[torch.zeros(1, 1, 1, 1)] * 4, downsample_ratio=ratio)
        graph = net.forward_graph(frames[0], *[torch.zeros(1, 1, 1, 1)] * 4, torch.tensor([ratio]))
    for a, b in zip(ref, graph):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_recurrent_state_is_carried_across_frames(checkpoint, exported):
    """The third frame with the state of the first two differs from the same frame started cold, and
    the masks stage's RVM backend (uint8 frames, states kept between steps) carries it like torch."""
    net = load_rvm(checkpoint)
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (3, 2, 64, 80, 3), dtype=np.uint8)  # 3 steps of 2 streams
    frames = [torch.as_tensor(f).permute(0, 3, 1, 2).float() / 255 for f in rgb]
    carried = _torch_steps(net, frames, 1.0)
    cold = _torch_steps(net, frames[2:], 1.0)[0]
    assert np.abs(carried[2][1] - cold[1]).max() > 1e-3  # pha depends on the history
    assert np.abs(carried[2][2] - cold[2]).mean() > 1e-3  # and so does the state
    backend = RvmMatting(exported, device="cpu", downsample_ratio=1.0, threads=1)
    for t in range(3):
        alpha = backend.step(rgb[t])
        assert alpha.shape == (2, 64, 80)
        np.testing.assert_allclose(alpha, carried[t][1][:, 0], atol=5e-5)
    backend.reset()
    np.testing.assert_allclose(backend.step(rgb[2]), cold[1][:, 0], atol=5e-5)


def test_matting_asset_from_the_checkpoint_is_exported_once(checkpoint, tmp_path):
    store = LocalStore(tmp_path / "store")
    rec = add_asset(store, "matting", checkpoint)
    assert rec["file"] == "rvm_mobilenetv3.onnx" and rec["source_file"] == "rvm_mobilenetv3.pth"
    assert rec["facts"]["model"] == "rvm" and rec["facts_extra"]["variant"] == "mobilenetv3"
    assert add_asset(store, "matting", checkpoint) == rec  # found by the source's sha256, not exported again
    path = asset_path(store, "matting", rec["sha256"], tmp_path / "cache")
    assert validate_rvm(path)["inputs"]["downsample_ratio"] == [1]
    assert RvmMatting(path, device="cpu", threads=1).step(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 32, 32)


def test_wrong_and_truncated_checkpoints_are_refused_in_one_line(checkpoint, tmp_path, capsys):
    data = checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match=r"truncated\.pth: not a readable PyTorch checkpoint") as e:
        load_rvm(truncated)
    assert "\n" not in str(e.value)
    bisenet = tmp_path / "79999_iter.pth"
    torch.save(BiSeNet().state_dict(), bisenet)
    with pytest.raises(BadInput, match=r"79999_iter\.pth: not a RobustVideoMatting mobilenetv3 checkpoint: "
                                       r"\d+ missing .*; \d+ unexpected") as e:
        load_rvm(bisenet)
    assert "\n" not in str(e.value) and "rvm_mobilenetv3.pth" in str(e.value)
    state = torch.load(checkpoint, weights_only=True)
    state["project_mat.conv.weight"] = torch.zeros(3, 16, 1, 1)
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(BadInput, match=r"wrong shape \(project_mat\.conv\.weight \[3, 16, 1, 1\]"):
        load_rvm(tmp_path / "other.pth")
    store = tmp_path / "s"
    for bad in (truncated, bisenet):
        assert main(["assets", "add", "matting", str(bad), "--store", str(store)]) == 2
        err = capsys.readouterr().err.strip()
        assert str(bad) in err and len(err.splitlines()) == 1, err
    assert not store.exists() or not any(store.rglob("asset.json"))


def test_run_options_choose_the_exported_matting_model(checkpoint, tmp_path):
    """``avatar run --matting rvm_mobilenetv3.pth`` stores the ONNX export and chooses it for the actor."""
    from stages.cli.run_cmd import prepare_actor

    store = LocalStore(tmp_path / "store")
    pipeline = prepare_actor(store, "a", None, None, "tiny", assets={"matting": checkpoint})
    rec = store.get_json(f"assets/matting/{pipeline.assets['matting']}/asset.json")
    assert rec["file"] == "rvm_mobilenetv3.onnx" and rec["source_file"] == checkpoint.name


def test_resnet50_variant_loads_and_exports(tmp_path):
    """The larger variant (26.9 M parameters): strict load by its keys, ONNX equal to torch."""
    net = load_rvm(save_standin(tmp_path / "rvm_resnet50.pth", "resnet50", 4))
    assert net.variant == "resnet50"
    onnx_path = export_onnx(net, tmp_path / "rvm50.onnx", size=(48, 48))
    src = torch.rand(1, 3, 48, 64)
    z = [torch.zeros(1, 1, 1, 1)] * 4
    with torch.no_grad():
        want = net(src, *z, downsample_ratio=1.0)
    got = _ort(onnx_path).run(None, {"src": src.numpy(), **{f"r{k}i": np.zeros((1, 1, 1, 1), np.float32)
                                                            for k in range(1, 5)},
                                     "downsample_ratio": np.array([1.0], np.float32)})
    assert [g.shape[1] for g in got[2:]] == list(STATE_CHANNELS["resnet50"])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=5e-5, rtol=1e-4)
