"""The training losses: FlashAvatar's Huber terms and the optional silhouette term."""

import torch

from stages.gauss.losses import avatar_loss, silhouette_loss


def test_silhouette_loss_is_the_mean_absolute_alpha_error_and_pulls_alpha_to_the_mask():
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1.0
    assert float(silhouette_loss(target.clone(), target)) == 0.0
    alpha = torch.full((2, 8, 8), 0.5, requires_grad=True)
    loss = silhouette_loss(alpha, target)
    assert abs(float(loss) - 0.5) < 1e-7  # every pixel is 0.5 away
    loss.backward()
    g = alpha.grad
    assert (g[target > 0.5] < 0).all() and (g[target < 0.5] > 0).all()  # a descent step moves alpha to the mask


def test_avatar_loss_weights_the_mouth():
    img = torch.zeros(1, 4, 4, 3)
    gt = torch.full((1, 4, 4, 3), 0.05)
    mouth = torch.zeros(1, 4, 4)
    base, parts = avatar_loss(img, gt, mouth)
    assert float(parts["mouth"]) == 0.0
    mouth[:, :2] = 1.0
    weighted, parts = avatar_loss(img, gt, mouth, mouth_weight=40.0)
    assert abs(float(weighted) - (float(base) + 40.0 * float(parts["mouth"]))) < 1e-7
    assert float(parts["mouth"]) > 0
