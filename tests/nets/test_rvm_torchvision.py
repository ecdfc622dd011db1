"""RVM's backbones against torchvision itself (on the GPU machine, where torchvision imports): RVM
subclasses torchvision's MobileNetV3 (its own block list) and ResNet-50 (layer4 dilated), so our
encoders must have exactly their state-dict keys and shapes and, with the same weights, the same
features (BN eps, hard-swish, squeeze-excite, dilation). Runs on the CPU of that machine."""

import pytest
import torch

from stages.nets.rvm import IMAGENET_MEAN, IMAGENET_STD, MOBILENETV3_BLOCKS, MOBILENETV3_TAPS, MattingNetwork

pytestmark = pytest.mark.gpu


def _torchvision():
    """torchvision's model classes, or a skip (its wheel does not import against the CPU machines' torch)."""
    try:
        from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3
        from torchvision.models.resnet import Bottleneck, ResNet
    except Exception as e:  # noqa: BLE001 - an ImportError, or a RuntimeError from its compiled ops
        pytest.skip(f"torchvision does not import here ({type(e).__name__}); it is on the GPU machine only")
    return InvertedResidualConfig, MobileNetV3, Bottleneck, ResNet


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("bn1.weight") or ".1.weight" in name and t.ndim == 1:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)


def _backbone_state(net: MattingNetwork) -> dict[str, torch.Tensor]:
    return {k[len("backbone."):]: v for k, v in net.state_dict().items() if k.startswith("backbone.")}


def test_mobilenetv3_encoder_is_torchvisions():
    config, mobilenet, _, _ = _torchvision()
    blocks = [config(cin, k, mid, cout, se, "HS" if hs else "RE", stride, dil, 1.0)
              for cin, k, mid, cout, se, hs, stride, dil in MOBILENETV3_BLOCKS]
    theirs = mobilenet(blocks, last_channel=1280).eval()
    del theirs.avgpool, theirs.classifier
    ours = MattingNetwork("mobilenetv3").eval()
    _randomise(ours, 0)
    mine = _backbone_state(ours)
    assert {k: tuple(v.shape) for k, v in theirs.state_dict().items()} == {k: tuple(v.shape) for k, v in mine.items()}
    theirs.load_state_dict(mine, strict=True)
    x = torch.rand(2, 3, 80, 96)
    with torch.no_grad():
        want = []
        h = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        for i, layer in enumerate(theirs.features):
            h = layer(h)
            if i in MOBILENETV3_TAPS:
                want.append(h)
        got = ours.backbone(x)
    assert [tuple(t.shape[1:]) for t in got] == [(16, 40, 48), (24, 20, 24), (40, 10, 12), (960, 5, 6)]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_resnet50_encoder_is_torchvisions():
    _, _, bottleneck, resnet = _torchvision()
    theirs = resnet(bottleneck, [3, 4, 6, 3], replace_stride_with_dilation=[False, False, True]).eval()
    del theirs.avgpool, theirs.fc
    ours = MattingNetwork("resnet50").eval()
    _randomise(ours, 1)
    mine = _backbone_state(ours)
    assert {k: tuple(v.shape) for k, v in theirs.state_dict().items()} == {k: tuple(v.shape) for k, v in mine.items()}
    theirs.load_state_dict(mine, strict=True)
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        f1 = theirs.relu(theirs.bn1(theirs.conv1(x)))
        f2 = theirs.layer1(theirs.maxpool(f1))
        f3 = theirs.layer2(f2)
        want = [f1, f2, f3, theirs.layer4(theirs.layer3(f3))]
        got = ours.backbone(x)
    assert tuple(got[3].shape[1:]) == (2048, 4, 5)  # 1/16: layer4 dilated, not strided
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
