"""Which Gaussians paint an open eye into a trained avatar's shut-eye render (issue #14).

Renders an actor's avatar at its median camera and neutral (the median of its training frames'
parameters) with the eyelids open ``[0, 0]``, shut ``[1, 1]`` and winking ``[1, 0]`` (added to the
neutral's, as ``avatar drive`` transfers them), under candidate changes: every MLP position offset
zeroed, the Gaussians of the eye-opening triangles hidden, the Gaussians whose posed centre lies
inside the shut eye's 2-D lid outline hidden, and so on. MediaPipe reads each render's per-eye lid
gap over eye width (:func:`stages.tracking.eyelids.eye_opening_np`). Prints one JSON object and
writes one PNG per variant (open / shut / wink / blink through expression 2, top to bottom, cropped to the eyes) to ``--out``.

    python bench/blink_probe.py --store /tmp/blinkb_drive/store --actor b --out /tmp/probe
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.face.model import load_face_model  # noqa: E402
from stages.gauss.model import Gaussians  # noqa: E402
from stages.gauss.render_ref import render_gaussians_reference  # noqa: E402
from stages.gauss.surface import flame_surface  # noqa: E402
from stages.gauss.trainer import cameras, load_avatar  # noqa: E402
from stages.motion.format import load_motion  # noqa: E402
from stages.motion.transfer import median_rotation, neutral_of  # noqa: E402
from stages.tracking.eyelids import EYES_MP, eye_opening_np  # noqa: E402

LIDS = {"open": ((0.0, 0.0), 0.0), "shut": ((1.0, 1.0), 0.0), "wink": ((1.0, 0.0), 0.0),
        "blink_exp2": ((0.2, 0.2), 0.6)}
"""State -> (eyelids added to the neutral's, expression 2 added): the stand-in's expression 2 closes both
eyes, and a driver's tracked blink lands there (A's blink in the drive test: about +0.5 and eyelids +0.2)."""


def _conds(neutral_cond: np.ndarray) -> torch.Tensor:
    c = np.tile(neutral_cond, (len(LIDS), 1))
    for i, (lids, exp2) in enumerate(LIDS.values()):
        c[i, -2:] = np.clip(neutral_cond[-2:] + np.asarray(lids), -0.5, 1.5)
        c[i, 2] += exp2
    return torch.as_tensor(c, dtype=torch.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--actor", default="b")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--resolution", type=int, default=512)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.store / "actors" / args.actor
    model, meta = load_avatar(root / "avatar" / "avatar.pt")
    model.eval()
    data = load_face_model(None)
    surface = flame_surface(data, meta["shape"].numpy())
    m = load_motion(root / "dataset" / "motion.npz")
    nt = neutral_of(m)
    neutral_cond = np.concatenate([nt.exp, nt.jaw, nt.eyes, nt.eyelids]).astype(np.float32)
    cond = _conds(neutral_cond)
    n = cond.shape[0]
    R = torch.as_tensor(median_rotation(m.R)).expand(n, 3, 3)
    t = torch.as_tensor(np.median(m.t, 0), dtype=torch.float32).expand(n, 3)
    s = args.resolution / 512
    K = torch.as_tensor(m.K, dtype=torch.float32).clone()
    K[:2] *= s
    K = K.expand(n, 3, 3)
    bg = torch.tensor([0.0, 1.0, 0.0])

    with torch.no_grad():
        verts = surface.vertices(cond)
        faces = surface.faces
        g0 = model.pose(verts, faces, cond, R=R)
        base = model.base_points(verts, faces)
        pe_off = g0.means - base  # [n, N, 3] the MLP's position offsets
        # the MLP asked only about conditions inside the range of the actor's own frames (the mesh gets all)
        seen = torch.as_tensor(m.cond())
        cond_c = torch.minimum(torch.maximum(cond, seen.amin(0)), seen.amax(0))
        g_c = model(base, cond_c, size_ratio=model.size_ratio(verts, faces), frame=model.triangle_frames(verts, faces))
    viewmats, centers = cameras(R, t)
    colors = model.colors(g0, centers).detach()

    # candidate sets
    opening_v = set()
    for side in ("left", "right"):
        opening_v |= set(int(i) for i in data.masks[f"{side}_eye_opening"])
    fv = faces[model.face_idx].numpy()
    in_open = np.isin(fv, sorted(opening_v))
    on_opening = torch.as_tensor(in_open.all(1))      # Gaussians on eye-opening triangles
    touches_lid = torch.as_tensor(in_open.any(1))     # on triangles with a lid vertex
    off_mm = pe_off[1].norm(dim=-1) * 1000            # offset on the shut eye, mm
    # 2-D: Gaussians whose posed centre projects inside either shut eye's lid outline (open mesh's outline)
    from stages.tracking.params import project

    lmk_open = verts[0, :478]
    pix_open, _ = project(lmk_open[None], R[:1], t[:1], K[0, [0, 1], [0, 1]], K[0, :2, 2])
    pix_open = pix_open[0].numpy()
    import cv2

    def inside_eyes(p2: np.ndarray) -> np.ndarray:
        mask = np.zeros(p2.shape[0], bool)
        for upper, lower, corners in EYES_MP:
            poly = pix_open[[corners[0], *upper, corners[1], *reversed(lower)]].astype(np.float32)
            for i, q in enumerate(p2):
                if cv2.pointPolygonTest(poly, (float(q[0]), float(q[1])), False) >= 0:
                    mask[i] = True
        return mask

    cam = (R[1] @ g0.means[1].T).T + t[1]
    p2 = torch.stack([K[0, 0, 0] * cam[:, 0] / cam[:, 2] + K[0, 0, 2], K[0, 1, 1] * cam[:, 1] / cam[:, 2] + K[0, 1, 2]], -1)
    in_eye_shut = torch.as_tensor(inside_eyes(p2.numpy()))
    bp = (R[1] @ base[1].T).T + t[1]
    b2 = torch.stack([K[0, 0, 0] * bp[:, 0] / bp[:, 2] + K[0, 0, 2], K[0, 1, 1] * bp[:, 1] / bp[:, 2] + K[0, 1, 2]], -1)
    base_in_eye = torch.as_tensor(inside_eyes(b2.numpy()))
    N = model.num_gaussians
    none = torch.zeros(N, dtype=torch.bool)

    fr = model.triangle_frames(verts, faces)
    area_ratio = torch.linalg.det(fr[0]).clamp(0, 1) if fr is not None else None  # [n, N]: det F = area ratio
    variants = {
        "as_trained": (False, none),
        "opacity_times_area_ratio": ("fade", none),
        "mlp_cond_clamped": ("clamped", none),
        "offsets_zeroed": (True, none),
        "hide_opening": (False, on_opening),
        "hide_lid_triangles": (False, touches_lid),
        "hide_centre_in_shut_eye": (False, in_eye_shut),
        "hide_centre_in_shut_eye_offsets_zeroed": (True, base_in_eye),
    }
    out = {"gaussians": N, "on_opening": int(on_opening.sum()), "on_lid_triangles": int(touches_lid.sum()),
           "centre_in_shut_eye": int(in_eye_shut.sum()),
           "centre_in_shut_eye_by_set": {"opening": int((in_eye_shut & on_opening).sum()),
                                          "lid_not_opening": int((in_eye_shut & touches_lid & ~on_opening).sum()),
                                          "elsewhere": int((in_eye_shut & ~touches_lid).sum())},
           "offset_mm_of_centre_in_shut_eye": np.round(np.percentile(off_mm[in_eye_shut].numpy(), [0, 50, 100]), 2).tolist()
           if in_eye_shut.any() else None,
           "offset_mm_on_lid_triangles": np.round(np.percentile(off_mm[touches_lid].numpy(), [50, 90, 100]), 2).tolist(),
           "variants": {}}
    from stages.video.facemesh import FaceMeshTracker
    import PIL.Image

    eye_box = pix_open[[33, 263, 159, 386, 145, 374]]
    lo = np.floor(eye_box.min(0) - [12 * s, 16 * s]).astype(int).clip(0, args.resolution - 1)
    hi = np.ceil(eye_box.max(0) + [12 * s, 16 * s]).astype(int).clip(0, args.resolution)
    with FaceMeshTracker(static=True) as fm:
        for name, (zero, hide) in variants.items():
            g = g_c if zero == "clamped" else g0
            means = base if zero is True else g.means
            op = g.opacities.clone()
            op[:, hide] = 0.0
            if zero == "fade" and area_ratio is not None:
                op = op * area_ratio
            img, _ = render_gaussians_reference(means, g.quats, g.scales, op, colors, viewmats, K,
                                                args.resolution, args.resolution, bg, covars=g.covars)
            rgb = (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            res = []
            for f in rgb:
                f512 = cv2.resize(f, (512, 512)) if args.resolution != 512 else f
                r = fm.process(f512)
                res.append(eye_opening_np(r.points[None, :, :2])[0].round(3).tolist() if r.ok else None)
            out["variants"][name] = dict(zip(LIDS, res))
            strip = np.concatenate([f[lo[1]:hi[1], lo[0]:hi[0]] for f in rgb], 0)  
            im = PIL.Image.fromarray(strip)
            im.resize((im.width * 2, im.height * 2), PIL.Image.LANCZOS).save(args.out / f"{name}.png")
            if name == "as_trained":  # the whole face too, open | shut | wink | blink through expression 2
                PIL.Image.fromarray(np.concatenate(list(rgb), 1)).save(args.out / "as_trained_full.png")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
