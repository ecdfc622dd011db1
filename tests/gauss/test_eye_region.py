"""The eye region's held-out error (stages.gauss.eye_region): the mask from MediaPipe landmarks
and the PSNR inside it."""

import sys
from pathlib import Path

import numpy as np

from stages.gauss.eye_region import eye_region_mask, masked_psnr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "masks"))
from test_neck import canonical_points  # noqa: E402  (MediaPipe's canonical face in pixels)


def test_mask_covers_both_eyes_and_nothing_else():
    p = canonical_points(centre=(256.0, 256.0))
    m = eye_region_mask(p, 512)
    for eye in (159, 145, 33, 133, 386, 374, 263, 362):
        x, y = np.rint(p[eye, :2]).astype(int)
        assert m[y, x], eye
    for other in (1, 13, 14, 152, 10):  # nose tip, lips, chin, forehead
        x, y = np.rint(p[other, :2]).astype(int)
        assert not m[y, x], other
    n_labels = __import__("cv2").connectedComponents(m.astype(np.uint8))[0] - 1
    assert n_labels == 2 and 0.005 < m.mean() < 0.05
    # scaled to a smaller render: the same region at a quarter of the size
    small = eye_region_mask(p, 128, 0.25)
    assert abs(small.mean() - m.mean()) < 0.2 * m.mean()
    assert not eye_region_mask(np.full((478, 3), np.nan), 64).any()


def test_masked_psnr_sees_only_the_eyes():
    rng = np.random.default_rng(0)
    p = canonical_points(centre=(256.0, 256.0))
    m = eye_region_mask(p, 512)
    gt = rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8)
    img = gt.copy()
    img[~m] = 0  # wrong outside the eyes: no effect on the eye score
    assert masked_psnr(img, gt, m) >= 120
    img = gt.astype(np.int16)
    img[m] += 10  # off by 10 levels inside the eyes
    img = np.clip(img, 0, 255).astype(np.uint8)
    d = (img[m].astype(float) - gt[m]) / 255
    assert abs(masked_psnr(img, gt, m) - (-10 * np.log10((d ** 2).mean()))) < 1e-9
    assert masked_psnr(gt / 255.0, gt / 255.0 * 0.5, m) < 20
    assert masked_psnr(gt, gt, np.zeros((512, 512), bool)) is None


def test_box_mask_matches_its_reference():
    import torch

    from stages.gauss.eye_region import box_mask, box_mask_reference

    boxes = torch.tensor([[[2.2, 3.0, 7.6, 5.5], [10.0, 1.0, 12.4, 2.6]], [[0.0, 0.0, 0.4, 16.0], [5.5, 5.5, 5.5, 5.5]]])
    fast, ref = box_mask(boxes, 12, 14), box_mask_reference(boxes, 12, 14)
    assert torch.equal(fast, ref)
    assert fast[0].sum() == 6 * 3 + 2 * 2 and fast[1].sum() == 1  # columns 2..7 x rows 3..5, 10..11 x 1..2; one centre


def test_eye_boxes_frame_each_eye_of_the_posed_mesh():
    """The eye regions of the built-in face model, projected through a synthetic frame's camera: two boxes
    side by side around the eyes (MediaPipe's eye corners of the same frame inside them), none overlapping."""
    import torch

    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params
    from stages.gauss.eye_region import box_mask, eye_boxes, eye_region_vertices
    from stages.gauss.surface import condition_vector, flame_surface

    data = load_face_model(None)
    p = generate_params(data, SynthSpec(n_frames=3, size=256, seed=3))
    surf = flame_surface(data, p["shape"][0])
    cond = condition_vector(*(torch.as_tensor(p[k]) for k in ("expression", "jaw", "eyes", "eyelids")))
    groups = eye_region_vertices(data.masks)
    assert len(groups) == 2
    boxes = eye_boxes(surf.vertices(cond), torch.as_tensor(p["R"]), torch.as_tensor(p["t"]), torch.as_tensor(p["K"]),
                      groups)
    assert boxes.shape == (3, 2, 4) and (boxes[..., 2:] > boxes[..., :2]).all()
    (l0, _, l1, _), (r0, _, r1, _) = boxes[0].tolist()
    assert l1 < r0 or r1 < l0  # the two eyes apart

    from stages.face.flame import FLAME
    from stages.face.camera import project

    out = FLAME(data)(torch.as_tensor(p["shape"]), torch.as_tensor(p["expression"]), torch.as_tensor(p["jaw"]),
                      torch.as_tensor(p["eyes"]), eyelids=torch.as_tensor(p["eyelids"]))
    mp = {int(i): j for j, i in enumerate(np.asarray(data.mp_index))}
    corners, _ = project(out.landmarks_mp[:, [mp[33], mp[133], mp[263], mp[362]]], torch.as_tensor(p["K"]),
                         torch.as_tensor(p["R"]), torch.as_tensor(p["t"]))
    mask = box_mask(boxes, 256, 256)
    for f in range(3):
        for u, v in corners[f].tolist():
            assert mask[f, int(v), int(u)] == 1.0, (f, u, v)
    assert 0.01 < mask.mean() < 0.1  # the eyes and brows, not the face
