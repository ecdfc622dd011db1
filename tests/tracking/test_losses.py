"""Loss terms: weights per region, temporal orders, photometric mask."""

import torch

from stages.tracking import losses, regions


def test_landmark_weights_per_region():
    w = losses.LandmarkWeights(oval=0.3, lips=2.0, iris=5.0).per_point()
    assert w.shape == (478,)
    assert w[regions.FACE_OVAL[0]] == 0.3 and w[regions.LIPS[3]] == 2.0 and w[473] == 5.0 and w[4] == 1.0


def test_landmark_loss_scale_and_frame_weights():
    pred = torch.zeros(2, 3, 2)
    target = torch.zeros(2, 3, 2)
    target[0, :, 0] = 5.12  # 0.01 image sizes off in frame 0
    pw = torch.ones(3)
    full = losses.landmark_loss(pred, target, pw, torch.ones(2), 512.0)
    assert torch.isclose(full, torch.tensor(0.5e-4))
    assert losses.landmark_loss(pred, target, pw, torch.tensor([0.0, 1.0]), 512.0) == 0
    assert torch.allclose(losses.landmark_error_px(pred, target), torch.tensor([5.12, 0.0]))


def test_temporal_loss_orders_and_cuts():
    t = torch.arange(6.0)[:, None].repeat(1, 3)  # steady motion
    link = torch.ones(5)
    assert losses.temporal_loss(t, link, order=1) > 0
    assert losses.temporal_loss(t, link, order=2) == 0  # acceleration term leaves steady motion alone
    jump = torch.cat([torch.zeros(3, 3), torch.ones(3, 3)])
    assert losses.temporal_loss(jump, link) > 0
    assert losses.temporal_loss(jump, torch.tensor([1.0, 1, 0, 1, 1])) == 0  # a cut between 2 and 3


def test_photometric_loss_masked_mean():
    a = torch.zeros(1, 2, 2, 3)
    b = torch.ones(1, 2, 2, 3)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert losses.photometric_loss(a, b, mask) == 1.0
    assert losses.photometric_loss(a, b, torch.zeros(1, 2, 2)) == 0.0
