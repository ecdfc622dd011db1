"""A wink reaches the avatar: the Gaussians ride the face mesh, and the condition's eyelids
(the last two entries: left, right) close one eye of the mesh and move those Gaussians only."""

import numpy as np
import torch

from stages.face.flame import FLAME
from stages.face.model import load_face_model
from stages.gauss.surface import FaceSurface, neutral_condition
from stages.tracking.eyelids import LEFT_UPPER, RIGHT_UPPER, eye_opening_np


def test_condition_eyelids_close_one_eye_of_the_mesh():
    data = load_face_model(None)  # the stand-in: vertex i is MediaPipe point i
    surf = FaceSurface(FLAME(data), torch.as_tensor(data.faces), torch.zeros(300))
    cond = neutral_condition(3)
    cond[1, -1] = 1.0  # right eye shut
    cond[2, -2] = 1.0  # left eye shut
    v = surf.vertices(cond).numpy()
    opening = eye_opening_np(v[:, :478, :2])  # front view: x, y of the mesh
    assert opening[0].min() > 0.1
    assert opening[1, 1] < 0.03 and abs(opening[1, 0] - opening[0, 0]) < 1e-6  # a right wink
    assert opening[2, 0] < 0.03 and abs(opening[2, 1] - opening[0, 1]) < 1e-6  # a left wink
    moved = np.linalg.norm(v[1] - v[0], axis=-1) > 1e-6
    assert moved[list(RIGHT_UPPER)].all() and not moved[list(LEFT_UPPER)].any()


def _eye_avatar(triangle_scale: bool, triangle_frame: bool = False):
    """The stand-in face as an avatar: skin-coloured Gaussians, dark ones (the iris) on the eye-opening
    triangles, 5 mm as a tiny trained avatar's eye Gaussians are; a frontal camera. Returns
    (model, surface, R, t, K, resolution)."""
    import math

    from stages.gauss.sh import rgb_to_sh0
    from stages.gauss.surface import flame_surface
    from stages.gauss.trainer import TrainConfig, build_avatar

    data = load_face_model(None)
    surf = flame_surface(data, np.zeros(300, np.float32))
    model = build_avatar(surf, TrainConfig(uv_resolution=64, sh_degree=0, mlp_width=16, mlp_depth=1, pe_freqs=2,
                                           triangle_scale=triangle_scale, triangle_frame=triangle_frame,
                                           shell="off"))  # the face alone
    rgb = torch.tensor([0.85, 0.65, 0.55]).repeat(model.num_gaussians, 1)
    iris = torch.zeros(model.num_gaussians, dtype=torch.bool)
    for side in ("left", "right"):
        inside = np.zeros(data.n_vertices, bool)
        inside[data.masks[f"{side}_eye_opening"]] = True
        iris |= torch.as_tensor(inside[data.faces].all(1))[model.face_idx]
    rgb[iris] = torch.tensor([0.1, 0.1, 0.3])
    with torch.no_grad():
        model.sh_dc.copy_(rgb_to_sh0(rgb).unsqueeze(1))
        model.opacity_logit.fill_(4.0)
        model.log_scale[iris] = math.log(5e-3)
    v0 = surf.neutral()
    centre = (v0.min(0).values + v0.max(0).values) / 2
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # OpenCV camera looking at the face (+z out of it)
    t = -(R @ centre) + torch.tensor([0.0, 0.0, 0.45])
    res = 96
    K = torch.tensor([[res * 2.2, 0, res / 2], [0, res * 2.2, res / 2], [0, 0, 1.0]])
    return model, surf, R, t, K, res


def _dark_pixels(model, surf, R, t, K, res, cond):
    """Rendered iris pixels (blue over red) per eye: [B, 2] (the subject's left, right)."""
    from stages.gauss.trainer import render_frames

    b = cond.shape[0]
    with torch.no_grad():
        img, _ = render_frames(model, surf, cond, R.expand(b, 3, 3), t.expand(b, 3), K.expand(b, 3, 3), res,
                               torch.ones(3), "reference")
    dark = img[..., 2] > img[..., 0] + 0.1  # [B, H, W]
    half = res // 2  # the camera faces the subject: its left eye is on the image's right
    return torch.stack([dark[:, :, half:].sum((1, 2)), dark[:, :, :half].sum((1, 2))], 1), img


def test_a_rendered_wink_hides_one_iris_when_gaussians_follow_their_triangles(tmp_path):
    """A wink (eyelids [1, 0]: the subject's left eye shut) rendered: with Gaussians that scale with
    their triangle the shut eye's iris disappears and the open one stays; without, the shut lid's
    collapsed triangles keep their 5-mm Gaussians and the iris still shows (the old avatar's fault)."""
    cond = neutral_condition(3)
    cond[1, -2] = 1.0  # left wink
    cond[2, -1] = 1.0  # right wink
    model, surf, R, t, K, res = _eye_avatar(True)
    dark, img = _dark_pixels(model, surf, R, t, K, res, cond)
    from PIL import Image

    Image.fromarray((torch.cat(list(img), 1).clamp(0, 1) * 255).byte().numpy()).save(tmp_path / "winks.png")
    print("iris pixels (left, right eye) neutral / left wink / right wink:", dark.tolist())
    assert dark[0].min() > 20  # both irises show on the open face
    assert dark[1, 0] <= 0.05 * dark[0, 0] and dark[1, 1] >= 0.9 * dark[0, 1]  # left shut, right open
    assert dark[2, 1] <= 0.05 * dark[0, 1] and dark[2, 0] >= 0.9 * dark[0, 0]
    old, _ = _dark_pixels(*_eye_avatar(False), cond)
    print("without triangle scaling:", old.tolist())
    assert old[1, 0] > 0.3 * old[0, 0] and old[2, 1] > 0.3 * old[0, 1]  # the iris stays through the shut lid
    # Gaussians in their triangle's frame (train.triangle_frame): the shut eye's opening triangles squash
    # their Gaussians to a fifth of their height; the iris goes too, the open eye keeps all of its pixels
    framed, img = _dark_pixels(*_eye_avatar(False, triangle_frame=True), cond)
    Image.fromarray((torch.cat(list(img), 1).clamp(0, 1) * 255).byte().numpy()).save(tmp_path / "winks_frame.png")
    print("triangle frame:", framed.tolist())
    assert framed[0].min() > 20
    assert framed[1, 0] <= 0.05 * framed[0, 0] and framed[1, 1] >= 0.9 * framed[0, 1]
    assert framed[2, 1] <= 0.05 * framed[0, 1] and framed[2, 0] >= 0.9 * framed[0, 0]
