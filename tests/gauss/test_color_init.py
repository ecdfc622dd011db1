"""Starting colours from training frames: a Gaussian takes the colour of the pixel it projects to
where it is in front and inside the head; hidden or outside ones take the mean of the seen ones."""

import torch

from stages.gauss.color_init import initial_colors


def _camera(size: int = 32, f: float = 40.0):
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return torch.eye(3)[None], torch.zeros(1, 3), K[None]


def _plane(z: float, n: int = 12, half: float = 0.3) -> torch.Tensor:
    """n x n points on a square at depth z (world = camera), [n*n, 3]."""
    g = torch.linspace(-half, half, n)
    y, x = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([x.flatten(), y.flatten(), torch.full((n * n,), z)], -1)


def test_front_points_take_the_pixel_colour_and_hidden_ones_the_mean():
    size = 32
    R, t, K = _camera(size)
    img = torch.zeros(1, size, size, 3)
    img[0, :, : size // 2] = torch.tensor([1.0, 0.0, 0.0])  # left half red
    img[0, :, size // 2:] = torch.tensor([0.0, 0.0, 1.0])  # right half blue
    inside = torch.ones(1, size, size)
    front, back = _plane(1.0), _plane(1.5)  # the back plane is hidden behind the front one
    pts = torch.cat([front, back])[None]
    rgb, seen = initial_colors(pts, R, t, K, img, inside, cell=4, depth_tolerance=0.05)
    nf = front.shape[0]
    assert seen[:nf].all() and not seen[nf:].any()
    left = front[:, 0] < -0.01
    right = front[:, 0] > 0.01
    assert torch.allclose(rgb[:nf][left], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(rgb[:nf][right], torch.tensor([0.0, 0.0, 1.0]))
    mean = rgb[:nf].mean(0)
    assert torch.allclose(rgb[nf:], mean.expand(nf, 3))


def test_outside_the_head_is_not_used_and_frames_average():
    size = 32
    R, t, K = _camera(size)
    pts = _plane(1.0)[None].expand(2, -1, -1)
    img = torch.stack([torch.full((size, size, 3), 0.2), torch.full((size, size, 3), 0.6)])
    inside = torch.ones(2, size, size)
    inside[1, :, size // 2:] = 0  # the second frame's right half is background
    rgb, seen = initial_colors(pts, R.expand(2, 3, 3), t.expand(2, 3), K.expand(2, 3, 3), img, inside)
    assert seen.all()
    x = pts[0, :, 0]
    assert torch.allclose(rgb[x < -0.01], torch.full(((x < -0.01).sum(), 3), 0.4))  # both frames: mean
    assert torch.allclose(rgb[x > 0.01], torch.full(((x > 0.01).sum(), 3), 0.2))  # first frame only


def test_starting_colours_from_training_frames_beat_grey(toy_dataset, one_thread):
    """On the toy dataset the avatar's untrained render is closer to held-out frames with colours read
    from 4 training frames than with the grey start."""
    from stages.dataset.layout import DatasetLayout
    from stages.gauss.data import AvatarFrames, TrackedSequence, split_frames
    from stages.gauss.evaluate import evaluate
    from stages.gauss.synthetic import toy_surface
    from stages.gauss.trainer import TrainConfig, build_avatar, init_colors_from_frames

    layout = DatasetLayout(toy_dataset)
    cfg = TrainConfig(resolution=48, sh_degree=1, mlp_width=16, mlp_depth=1, pe_freqs=2, uv_resolution=32)
    surface = toy_surface()
    seq = TrackedSequence.load(layout)
    train_idx, test_idx = split_frames(len(seq), 0, 0.15)
    bg = (0.0, 1.0, 0.0)
    held_out = AvatarFrames(layout, seq, test_idx, cfg.resolution, bg)
    scores = []
    for frames in (0, 4):
        model = build_avatar(surface, cfg)
        if frames:
            seen = init_colors_from_frames(model, surface, AvatarFrames(layout, seq, train_idx, cfg.resolution, bg),
                                           frames)
            assert 0 < seen <= model.num_gaussians
        scores.append(evaluate(model, surface, held_out, torch.tensor(bg), "reference", "cpu", 4).summary()["psnr_mean"])
    assert scores[1] > scores[0] + 1.0, scores
