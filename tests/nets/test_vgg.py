"""LPIPS (VGG) without torchvision: a stand-in vgg16-397923af.pth with torchvision's key names and
shapes (the huge classifier matrices as zero-stride views, so the file is small) and stand-in LPIPS
v0.1 linear weights load strictly; the metric behaves (0 on equal images, positive otherwise,
gradients reach the image, nothing outside the mask counts); wrong files are one line. On the GPU
machine, ours equals the lpips package's on the same images and backbone weights."""

import numpy as np
import pytest
import torch

from stages.errors import BadInput
from stages.nets.vgg import CHANNELS, CLASSIFIER, LPIPS, installed_lpips_linear, load_lpips, masked_lpips


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Single-threaded torch (the shared CPU machine; see tests/conftest.py)."""


def standin_vgg16(path, seed=0):
    """torchvision's key names and shapes: features.{0,2,5,...,28}.weight/bias and classifier.{0,3,6}."""
    torch.manual_seed(seed)
    state = {f"features.{k}": v for k, v in LPIPS().features.state_dict().items()}
    for k in state:
        state[k] = torch.randn_like(state[k]) * (0.05 if k.endswith("weight") else 0.01)
    state.update({k: torch.zeros(1).expand(*s) for k, s in CLASSIFIER.items()})
    torch.save(state, path)
    return path


def standin_linear(path, seed=1):
    g = torch.Generator().manual_seed(seed)
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) * 0.1 for i, c in enumerate(CHANNELS)},
               path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("vgg")
    return standin_vgg16(d / "vgg16-397923af.pth"), standin_linear(d / "vgg.pth")


def test_standins_load_strictly_and_the_metric_behaves(weights):
    vgg, lin = weights
    m = load_lpips(vgg, lin)
    ref = torch.load(vgg, weights_only=True)
    torch.testing.assert_close(m.features[28].weight, ref["features.28.weight"])
    torch.testing.assert_close(m.lins[4].weight, torch.load(lin, weights_only=True)["lin4.model.1.weight"])
    x = torch.rand(2, 3, 48, 48, requires_grad=True)
    y = torch.rand(2, 3, 48, 48)
    assert torch.allclose(m(x * 2 - 1, x * 2 - 1), torch.zeros(2), atol=1e-7)
    d = m(x * 2 - 1, y * 2 - 1)
    assert d.shape == (2,) and (d > 0).all()
    d.sum().backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is None for p in m.parameters())


def test_masked_term_ignores_what_is_outside_the_mask(weights):
    m = load_lpips(*weights)
    img = torch.rand(1, 40, 40, 3)
    gt = img.clone()
    mask = torch.zeros(1, 40, 40)
    mask[:, 8:32, 8:32] = 1
    gt[:, :4] = torch.rand(1, 4, 40, 3)  # differs only outside the mask
    assert float(masked_lpips(m, img, gt, mask)) == pytest.approx(0.0, abs=1e-7)
    gt[:, 16:20, 16:20] = 0.0
    assert float(masked_lpips(m, img, gt, mask)) > 0


def test_wrong_files_are_refused_in_one_line(weights, tmp_path):
    vgg, lin = weights
    state = torch.load(vgg, weights_only=True)
    del state["features.28.bias"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(BadInput, match=r"cut\.pth: not torchvision's VGG-16 checkpoint \(features\): 1 missing "
                                       r"\(28\.bias\)") as e:
        load_lpips(tmp_path / "cut.pth", lin)
    assert "\n" not in str(e.value)
    state = torch.load(vgg, weights_only=True)
    state["classifier.6.weight"] = torch.zeros(10, 4096)
    torch.save(state, tmp_path / "cifar.pth")
    with pytest.raises(BadInput, match="classifier entries classifier.6.weight"):
        load_lpips(tmp_path / "cifar.pth", lin)
    (tmp_path / "half.pth").write_bytes(lin.read_bytes()[:100])
    with pytest.raises(BadInput, match=r"half\.pth: not a readable PyTorch checkpoint"):
        load_lpips(vgg, tmp_path / "half.pth")
    with pytest.raises(BadInput, match="LPIPS v0.1's VGG linear layers"):
        load_lpips(vgg, vgg)


def test_installed_linear_file_is_found_without_importing_lpips():
    import sys

    path = installed_lpips_linear()
    assert "lpips" not in sys.modules
    assert path is None or (path.is_file() and path.name == "vgg.pth")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_equals_the_lpips_package_on_the_same_weights(weights):
    """The lpips package (with torchvision) on the GPU machine: its VGG slices get our stand-in
    backbone, its own v0.1 linear layers are the ones we read from its data file."""
    lpips = pytest.importorskip("lpips", reason="the lpips package (it needs torchvision, which the CPU machines "
                                "lack) is carried to the GPU machine only")
    vgg, _ = weights
    lin = installed_lpips_linear()
    assert lin is not None
    ours = load_lpips(vgg, lin).cuda()
    theirs = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).cuda().eval()
    feats = {k[len("features."):]: v for k, v in torch.load(vgg, weights_only=True).items() if k.startswith("features.")}
    for s in range(1, 6):
        sl = getattr(theirs.net, f"slice{s}")
        sl.load_state_dict({k: feats[k] for k in sl.state_dict()})
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(4, 3, 128, 128, device="cuda", generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(4, 3, 128, 128, device="cuda", generator=g)).clamp(-1, 1)
    with torch.no_grad():
        np.testing.assert_allclose(ours(x, y).cpu().numpy(), theirs(x, y).flatten().cpu().numpy(), rtol=1e-4,
                                   atol=1e-6)
