"""User-supplied ONNX models: validation, sessions, RVM streams, BiSeNet labels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from stages.assets import add_asset
from stages.errors import BadInput
from stages.masks.backends.bisenet import BiSeNetParsing, class_lut, normalise
from stages.masks.backends.rvm import RvmMatting, plan_streams, streams_for
from stages.masks.onnx_models import providers_for, validate_bisenet, validate_rvm
from stages.store.local import LocalStore


def test_validators_accept_the_real_signatures(standin_models):
    facts = validate_rvm(standin_models["rvm"])
    assert facts["model"] == "rvm" and facts["dtype"] == "float32"
    assert facts["inputs"]["src"][1] == 3 and facts["inputs"]["downsample_ratio"] == [1]
    assert validate_rvm(standin_models["rvm16"])["dtype"] == "float16"
    facts = validate_bisenet(standin_models["bisenet"])
    assert facts["classes"] == 19 and facts["output"] == "logits" and facts["input_shape"][1] == 3


def test_wrong_models_are_refused_with_one_line(standin_models, tmp_path):
    with pytest.raises(BadInput, match=r"rvm\.onnx: expected a 19-class face-parsing") as e:
        validate_bisenet(standin_models["rvm"])
    assert "\n" not in str(e.value)
    with pytest.raises(BadInput, match=r"bisenet\.onnx: expected a RobustVideoMatting.*missing src") as e:
        validate_rvm(standin_models["bisenet"])
    assert "\n" not in str(e.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx model")
    with pytest.raises(BadInput, match="not a loadable ONNX model") as e:
        validate_rvm(junk)
    assert "\n" not in str(e.value)


def test_wrong_class_count_and_wrong_dtype_are_refused(tmp_path):
    import torch

    from stages.masks.standin_models import StandInBiSeNet, export_bisenet

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = export_bisenet(StandInBiSeNet(width=4, classes=11), tmp_path / "eleven.onnx")
    with pytest.raises(BadInput, match=r"output logits has shape \['b', 11"):
        validate_bisenet(p)

    class IntIn(torch.nn.Module):
        def forward(self, x):
            return x.float().repeat(1, 7, 1, 1)[:, :19]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(IntIn(), (torch.zeros(1, 3, 8, 8, dtype=torch.int64),), str(tmp_path / "int.onnx"),
                          dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "h", 3: "w"}})
    with pytest.raises(BadInput, match=r"input x is tensor\(int64\)"):
        validate_bisenet(tmp_path / "int.onnx")


def test_assets_add_runs_the_validators(standin_models, tmp_path):
    store = LocalStore(tmp_path / "store")
    rec = add_asset(store, "matting", standin_models["rvm"])
    assert rec["facts"]["model"] == "rvm"
    with pytest.raises(BadInput, match="expected a RobustVideoMatting"):
        add_asset(store, "matting", standin_models["bisenet"])
    assert add_asset(store, "parsing", standin_models["bisenet"])["facts"]["model"] == "bisenet"


def test_providers():
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    assert providers_for("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(BadInput):
        providers_for("tpu")


@pytest.mark.parametrize("n,streams,warmup,earliest_back", [(37, 4, 5, 0), (37, 4, 5, 3), (8, 16, 2, 10),
                                                            (5, 1, 0, 0), (100, 7, 10, 10)])
def test_plan_streams_emits_every_frame_once_in_order(n, streams, warmup, earliest_back):
    first = 101
    steps = plan_streams(first, first + n, streams, warmup, first - earliest_back)
    emitted = [k for st in steps for k, e in zip(st.frames, st.emit) if e]
    assert sorted(emitted) == list(range(first, first + n))
    s = len(steps[0].frames)
    assert s == min(streams, n) and all(len(st.frames) == s for st in steps)
    for j in range(s):  # each stream: consecutive frames, warm-up (not emitted) first
        seq = [st.frames[j] for st in steps]
        em = [st.emit[j] for st in steps]
        real = [k for k, e in zip(seq, em) if e]
        assert real == list(range(real[0], real[-1] + 1))
        lead = em.index(True)
        assert seq[:lead + 1] == list(range(seq[lead] - lead, seq[lead] + 1))
        assert lead == min(warmup, real[0] - (first - earliest_back))
        assert all(k >= first - earliest_back for k in seq)


def test_streams_for_bounds_warmup_overhead():
    assert streams_for(1000, 16, 10) == 16
    assert streams_for(100, 16, 10) == 2
    assert streams_for(10, 16, 10) == 1
    assert streams_for(50, 16, 0) == 16


def test_rvm_state_is_carried_and_reset(standin_models):
    rng = np.random.default_rng(0)
    frames = (rng.random((3, 64, 64, 3)) * 255).astype(np.uint8)
    for key in ("rvm", "rvm16"):
        m = RvmMatting(standin_models[key], "cpu")
        a1 = m.step(frames)
        a2 = m.step(frames)
        m.reset()
        a3 = m.step(frames)
        assert a1.shape == (3, 64, 64) and a1.dtype == np.float32
        assert 0 <= a1.min() and a1.max() <= 1
        assert np.abs(a1 - a2).max() > 0.02  # the state changes the output
        np.testing.assert_allclose(a1, a3, atol=1e-3 if key == "rvm16" else 1e-6)
    # streams are independent: stream 1 alone gives what it gives in a batch
    m = RvmMatting(standin_models["rvm"], "cpu")
    m.step(frames)
    batch = m.step(frames[::-1].copy())
    m.reset()
    m.step(frames[1:2])
    np.testing.assert_allclose(m.step(frames[1:2]), batch[1:2], atol=1e-5)


def test_bisenet_in_graph_preprocessing_equals_host(standin_models):
    rng = np.random.default_rng(1)
    frames = (rng.random((2, 512, 512, 3)) * 255).astype(np.uint8)
    p = BiSeNetParsing(standin_models["bisenet"], "cpu", neckhead_classes=[1, 2], mouth_classes=[11])
    assert p.fused is not None
    assert [i.type for i in p.fused.get_inputs()] == ["tensor(uint8)"]
    fused, ref = p.labels(frames), p.labels_reference(frames)
    assert fused.dtype == np.uint8 and fused.shape == (2, 512, 512)
    assert len(np.unique(ref)) >= 3
    assert (fused == ref).mean() > 0.9999  # float rounding may flip an exact tie
    neck, mouth = p.masks(ref)
    assert np.array_equal(neck == 255, np.isin(ref, [1, 2])) and np.array_equal(mouth == 255, ref == 11)
    host_only = BiSeNetParsing(standin_models["bisenet"], "cpu", fused=False)
    assert host_only.fused is None and np.array_equal(host_only.labels(frames), ref)


def test_rvm_in_graph_scaling_equals_host(standin_models):
    rng = np.random.default_rng(2)
    frames = (rng.random((2, 64, 64, 3)) * 255).astype(np.uint8)
    for key, tol in (("rvm", 1e-5), ("rvm16", 2e-3)):
        fused, host = RvmMatting(standin_models[key], "cpu"), RvmMatting(standin_models[key], "cpu", fused=False)
        assert fused.fused and not host.fused
        for _ in range(2):
            np.testing.assert_allclose(fused.step(frames), host.step(frames), atol=tol)


def test_normalise_and_lut():
    x = normalise(np.full((1, 2, 2, 3), 255, np.uint8))
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
                               rtol=1e-5)
    lut = class_lut([1, 17])
    assert lut[1] == lut[17] == 255 and lut.sum() == 510


def test_without_the_onnx_package_the_host_paths_run(standin_models, monkeypatch):
    """The masks image may lack ``onnx``: preprocessing and argmax then run on the host."""
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    frames = (np.random.default_rng(3).random((2, 64, 64, 3)) * 255).astype(np.uint8)
    rvm = RvmMatting(standin_models["rvm"], "cpu")
    assert not rvm.fused and rvm.step(frames).shape == (2, 64, 64)
    bis = BiSeNetParsing(standin_models["bisenet"], "cpu")
    assert bis.fused is None
    big = np.repeat(np.repeat(frames, 8, axis=1), 8, axis=2)
    assert np.array_equal(bis.labels(big), bis.labels_reference(big))


def test_fixed_batch_one_parsing_model_is_run_frame_by_frame(tmp_path):
    """Many BiSeNet exports fix the batch to 1 (and the size to 512): frames are then fed singly."""
    import torch

    from stages.masks.standin_models import StandInBiSeNet

    model = StandInBiSeNet(width=4).eval()
    path = tmp_path / "b1.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 3, 512, 512),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["out", "a16", "a32"])
    assert validate_bisenet(path)["input_shape"] == [1, 3, 512, 512]
    p = BiSeNetParsing(path, "cpu")
    assert p.max_batch == 1 and p.fused is not None
    frames = (np.random.default_rng(4).random((3, 512, 512, 3)) * 255).astype(np.uint8)
    assert np.array_equal(p.labels(frames), p.labels_reference(frames))
