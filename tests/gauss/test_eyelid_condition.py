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
