"""Where wojtek's held-out error is (issue 19): fit against generalisation, regions, matte, tracking, split.

    python bench/heldout_breakdown.py DATASET_DIR ['{"seed": 1}'] [--preset demo|tiny|full]
        [--split tail|middle|interleave] [--save avatar.pt | --load avatar.pt] [--eval-res 256]
        [--train-sample 40] [--png-dir DIR] [--threads 1] [--device cpu]

Trains an avatar (the preset's values plus the JSON overrides, as bench/psnr_probe.py) or loads one,
then renders the held-out frames and as many training frames (evenly spaced) at ``--eval-res`` and
scores them with the render stage's metric (PSNR of the clamped render on the background colour
against ``(img*alpha + bg*(1-alpha))*neckhead + bg*(1-neckhead)``, full image, mean over frames).
Prints one JSON object:

- ``held_out`` / ``train``: PSNR mean and worst, per-frame PSNR (held out), and the squared error
  split over disjoint regions (shares, and the PSNR were that region's error zero):
  ``band`` (within ``--band`` px at 512 of the ground truth head's outline, whatever is there),
  then off the band ``face`` (the face model's triangles), ``hair`` (ground-truth head off the mesh
  above the chin's image row: hair, ears, forehead top), ``neck`` (the same below the chin row),
  ``bg`` (outside the ground-truth head: the render spilling over the background);
- ``matte``: what the ground truth itself holds. ``hard_matte_psnr``: the raw frame cut with the
  binarised matte x neckhead (an avatar with perfect colours and a perfectly opaque, pixel-exact
  silhouette) against the ground truth; ``soft_px_share``: pixels whose matte x neckhead lies
  strictly between 0.1 and 0.9; ``prev_frame_psnr``: each held-out ground truth against the one
  before it (how much the picture changes in 40 ms: the error of a render one frame late);
  ``collar_cut_px``: the frame-to-frame movement of the head mask's lowest row;
- ``tracking``: held-out frames against the training frames: head rotation (degrees from the
  training mean; the training range) and translation, and the distance of each held-out
  expression+jaw vector to its nearest training frame against the same for training frames
  (nearest other training frame at least 10 frames away); the correlation of per-frame PSNR with it.

``--split`` (a bench-only change of which frames are held out; the trainer is not changed):
``tail`` the default (last 10%), ``middle`` the same number from the middle of the clip,
``interleave`` every 10th frame. ``--png-dir``: the 4 worst held-out frames, each row render |
ground truth | error x4 | regions (red band, green face, blue hair, yellow neck, grey bg).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

REGIONS = ("band", "face", "hair", "neck", "bg")
BAND_PARTS = ("band_above_chin", "band_below_chin")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def split_override(kind: str):
    """A replacement for :func:`stages.gauss.data.choose_split` that holds out the default number of
    frames taken from the tail (unchanged), the middle, or every 10th frame."""
    from stages.gauss.data import Split, choose_split

    def choose(n, test_frames=None, test_fraction=None, max_train=10000, span=None):  # noqa: ANN001, ANN202
        base = choose_split(n, test_frames, test_fraction, max_train, span)
        if kind == "tail":
            return base
        a, b = span if span is not None else (0, n)
        k = len(base.test)
        if kind == "middle":
            mid = (a + b) // 2
            test = list(range(mid - k // 2, mid - k // 2 + k))
        else:
            test = list(range(a + 5, b, max(1, (b - a) // k)))[:k]
        held = set(test)
        train = [i for i in range(a, b) if i not in held]
        return Split(train, test, f"{kind}: {k} frames held out (bench split)")

    return choose


def regions(fg, mesh, chin_row, band_px: int):
    """Disjoint region masks of one frame (numpy bool [H, W] each) in :data:`REGIONS` order."""
    import cv2
    import numpy as np

    s = fg.shape[0]
    kern = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_px + 1, 2 * band_px + 1))
    m = fg.astype(np.uint8)
    band = (cv2.dilate(m, kern) - cv2.erode(m, kern)) > 0
    below = np.repeat(np.arange(s)[:, None] > chin_row, s, 1)
    face = mesh & ~band
    hair = fg & ~mesh & ~band & ~below
    neck = fg & ~mesh & ~band & below
    bg = ~fg & ~mesh & ~band
    return band, face, hair, neck, bg


def score(model, surface, frames, bg, renderer, device, band_px, keep_images=False):  # noqa: ANN001, ANN201
    """Per-frame PSNR and the squared error per region over ``frames``; optionally every frame's images."""
    import numpy as np
    import torch

    from psnr_probe import mesh_coverage
    from stages.gauss.trainer import render_frames

    s = frames.resolution
    chin = int(surface.neutral()[:, 1].argmin())
    sums = dict.fromkeys(REGIONS, 0.0)
    parts = dict.fromkeys(BAND_PARTS, 0.0)
    per_frame, kept = [], []
    with torch.no_grad():
        for i in range(0, len(frames), 8):
            items = [frames[j] for j in range(i, min(i + 8, len(frames)))]
            b = {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}
            img, alpha = render_frames(model, surface, b["cond"], b["R"], b["t"], b["K"], s, bg, renderer)
            img = img.clamp(0, 1)
            gt = frames.ground_truth(b)
            se = ((img - gt) ** 2).sum(-1).cpu().numpy()
            fg = ((b["alpha"].float() / 255) * (b["neckhead"].float() / 255) > 0.5).cpu().numpy()
            verts = surface.vertices(b["cond"])
            mesh = mesh_coverage(verts, surface.faces, b["R"], b["t"], b["K"], s)
            cc = torch.einsum("bij,bj->bi", b["R"], verts[:, chin]) + b["t"]
            chin_row = (torch.einsum("bij,bj->bi", b["K"], cc)[:, 1] / cc[:, 2]).cpu().numpy()
            for k in range(len(items)):
                reg = regions(fg[k], mesh[k], chin_row[k], band_px)
                for name, r in zip(REGIONS, reg):
                    sums[name] += float(se[k][r].sum())
                below = np.arange(s)[:, None] > chin_row[k]
                parts["band_below_chin"] += float(se[k][reg[0] & below].sum())
                parts["band_above_chin"] += float(se[k][reg[0] & ~below].sum())
                mse = se[k].sum() / (s * s * 3)
                per_frame.append((int(b["index"][k]), float(-10 * np.log10(max(mse, 1e-12)))))
                if keep_images:
                    kept.append((int(b["index"][k]), img[k].cpu().numpy(), gt[k].cpu().numpy(), se[k], reg))
    return per_frame, (sums, parts), kept


def summarise(per_frame, sums_parts, n_px):  # noqa: ANN001, ANN201
    import numpy as np

    sums, parts = sums_parts
    tot = sum(sums.values())
    ps = [p for _, p in per_frame]
    return {"frames": len(ps), "psnr": round(float(np.mean(ps)), 2), "psnr_min": round(float(np.min(ps)), 2),
            "mse": float(tot / n_px),
            "share": {k: round(v / tot, 3) for k, v in {**sums, **parts}.items()},
            "psnr_if_zero": {k: round(float(-10 * np.log10(max(tot - v, 1e-12) / n_px)), 2)
                             for k, v in {**sums, **parts}.items()}}


def matte_terms(layout, seq, test, s, bg):  # noqa: ANN001, ANN201
    """What the ground truth of the held-out frames holds on its own (see the module docstring)."""
    import numpy as np
    import torch

    from stages.gauss.data import AvatarFrames, composite_gt

    prev = [max(0, i - 1) for i in test]
    fr = AvatarFrames(layout, seq, sorted(set(test) | set(prev)), s, tuple(bg.tolist()))
    pos = {i: j for j, i in enumerate(fr.indices)}
    items = {i: fr[pos[i]] for i in fr.indices}
    hard, soft, lag, cut_rows = [], [], [], []
    for i in test:
        it = items[i]
        gt = composite_gt(it["img"], it["alpha"], it["neckhead"], bg)
        m = (it["alpha"].float() / 255) * (it["neckhead"].float() / 255)
        hard_img = composite_gt(it["img"].float() / 255, (m > 0.5).float(), torch.ones_like(m), bg)
        hard.append(float(-10 * torch.log10(((hard_img - gt) ** 2).mean().clamp_min(1e-12))))
        soft.append(float(((m > 0.1) & (m < 0.9)).float().mean()))
        p = items[max(0, i - 1)]
        gp = composite_gt(p["img"], p["alpha"], p["neckhead"], bg)
        lag.append(float(-10 * torch.log10(((gp - gt) ** 2).mean().clamp_min(1e-12))))
        rows = np.flatnonzero((m > 0.5).any(1).numpy())
        cut_rows.append(int(rows[-1]) if rows.size else -1)
    return {"hard_matte_psnr": round(float(np.mean(hard)), 2), "soft_px_share": round(float(np.mean(soft)), 4),
            "prev_frame_psnr": round(float(np.mean(lag)), 2),
            "collar_cut_px": {"mean_abs_step": round(float(np.mean(np.abs(np.diff(cut_rows)))), 2),
                              "range": [min(cut_rows), max(cut_rows)]}}


def tracking_terms(seq, train, test, per_frame):  # noqa: ANN001, ANN201
    """Held-out pose and expression against the training frames'."""
    import numpy as np
    import torch

    from stages.face.rotation import matrix_to_axis_angle
    from stages.gauss.trainer import mean_rotation

    R = torch.from_numpy(np.asarray(seq.R, np.float64))
    mean = mean_rotation(R[train])
    rel = np.degrees(matrix_to_axis_angle(R @ mean.T).numpy())  # [N, 3]
    ang = np.linalg.norm(rel, axis=1)
    t = np.asarray(seq.t, np.float64) * 1000.0
    x = np.asarray(seq.cond[:, :106], np.float64)
    tr, te = np.asarray(train), np.asarray(test)

    def nn(i: int, pool: np.ndarray, gap: int) -> float:
        cand = pool[np.abs(pool - i) >= gap]
        return float(np.linalg.norm(x[cand] - x[i], axis=1).min())

    nn_test = np.array([nn(i, tr, 1) for i in te])
    nn_train = np.array([nn(i, tr, 10) for i in tr[:: max(1, len(tr) // 60)]])
    lo, hi = rel[tr].min(0), rel[tr].max(0)
    outside = ((rel[te] < lo) | (rel[te] > hi)).any(1)
    ps = np.array([p for _, p in per_frame])
    idx = [i for i, _ in per_frame]
    order = np.array([list(te).index(i) for i in idx])
    corr_nn = float(np.corrcoef(ps, nn_test[order])[0, 1]) if len(ps) > 2 else float("nan")
    corr_ang = float(np.corrcoef(ps, ang[te][order])[0, 1]) if len(ps) > 2 else float("nan")
    return {"rot_deg_axis_train_range": [[round(float(a), 1), round(float(b), 1)] for a, b in zip(lo, hi)],
            "rot_deg_axis_test_range": [[round(float(a), 1), round(float(b), 1)]
                                        for a, b in zip(rel[te].min(0), rel[te].max(0))],
            "rot_deg_from_mean": {"train_median": round(float(np.median(ang[tr])), 1),
                                  "test_median": round(float(np.median(ang[te])), 1),
                                  "train_p95": round(float(np.percentile(ang[tr], 95)), 1)},
            "test_frames_outside_train_rot_range": int(outside.sum()),
            "t_mm_train_range": [[round(float(a), 1), round(float(b), 1)] for a, b in zip(t[tr].min(0), t[tr].max(0))],
            "t_mm_test_range": [[round(float(a), 1), round(float(b), 1)] for a, b in zip(t[te].min(0), t[te].max(0))],
            "expr_jaw_nn": {"test_median": round(float(np.median(nn_test)), 3),
                            "train_median_10_frames_apart": round(float(np.median(nn_train)), 3),
                            "test_max": round(float(nn_test.max()), 3)},
            "corr_psnr_vs_expr_nn": round(corr_nn, 2), "corr_psnr_vs_rot": round(corr_ang, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("overrides", nargs="?", default="{}")
    ap.add_argument("--preset", default="demo", choices=["demo", "tiny", "full"])
    ap.add_argument("--split", default="tail", choices=["tail", "middle", "interleave"])
    ap.add_argument("--eval-res", type=int, default=256)
    ap.add_argument("--train-sample", type=int, default=40)
    ap.add_argument("--band", type=float, default=8.0)
    ap.add_argument("--save")
    ap.add_argument("--load")
    ap.add_argument("--png-dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    import numpy as np
    import torch

    import stages.gauss.trainer as trainer_mod
    from psnr_probe import probe_inputs
    from stages.gauss.data import AvatarFrames, background_rgb
    from stages.gauss.trainer import TrainConfig, avatar_dict, config_from_dict, load_avatar, train

    torch.set_num_threads(a.threads)
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")  # training's log
    trainer_mod.choose_split = split_override(a.split)
    over = json.loads(a.overrides)
    layout, seq, surface, base = probe_inputs(a.dataset, a.preset)
    train_cpu = train_wall = 0.0
    if a.load:
        model, meta = load_avatar(a.load)
        cfg = config_from_dict(meta["train_config"])
    else:
        cfg = TrainConfig(**{**base, **over})
        c0, w0 = _cpu(), time.monotonic()
        with tempfile.TemporaryDirectory() as work:
            res = train(cfg, surface, layout, work, a.device)
        train_cpu, train_wall = _cpu() - c0, time.monotonic() - w0
        model = res.model
        if a.save:
            torch.save(avatar_dict(model.cpu(), surface, cfg, res.steps, res.images), a.save)
    model = model.to(a.device).eval()
    surface = surface.to(a.device)
    plan = trainer_mod.plan_training(cfg, len(seq), seq.face_span())
    test, train_idx = plan.split.test, plan.split.train
    s = a.eval_res
    bgc = background_rgb(cfg.background)
    bg = torch.tensor(bgc, device=a.device)
    band = max(1, round(a.band * s / 512))
    renderer = "gsplat" if a.device.startswith("cuda") else "reference"
    n_px_test = len(test) * s * s * 3
    pf_test, sums_test, kept = score(model, surface, AvatarFrames(layout, seq, test, s, bgc), bg, renderer, a.device,
                                     band, keep_images=bool(a.png_dir))
    sample = [train_idx[round(i * (len(train_idx) - 1) / max(1, a.train_sample - 1))] for i in range(a.train_sample)]
    sample = sorted(set(sample))
    pf_train, sums_train, _ = score(model, surface, AvatarFrames(layout, seq, sample, s, bgc), bg, renderer,
                                    a.device, band)
    out = {"preset": a.preset, "overrides": over, "split": a.split, "gaussians": model.num_gaussians, "eval_res": s,
           "train_cpu_s": round(train_cpu, 1), "train_wall_s": round(train_wall, 1),
           "held_out": {**summarise(pf_test, sums_test, n_px_test),
                        "per_frame": [[i, round(p, 2)] for i, p in pf_test]},
           "train": summarise(pf_train, sums_train, len(sample) * s * s * 3),
           "matte": matte_terms(layout, seq, test, s, torch.tensor(bgc)),
           "tracking": tracking_terms(seq, train_idx, test, pf_test),
           "load_avg_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(out))
    if a.png_dir and kept:
        from PIL import Image

        colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0.3, 0.3, 0.3]], np.float32)
        worst = sorted(kept, key=lambda r: dict(pf_test)[r[0]])[:4]
        rows = []
        for _, img, gt, se, reg in worst:
            err = np.clip(np.sqrt(se / 3) * 4, 0, 1)[..., None].repeat(3, -1)
            rmap = np.zeros_like(gt)
            for c, r in zip(colours, reg):
                rmap[r] = c
            rows.append(np.concatenate([img, gt, err, rmap], 1))
        d = Path(a.png_dir)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.concatenate(rows, 0) * 255).round().astype(np.uint8)).save(d / "worst_heldout.png")
        (d / "worst_heldout.txt").write_text("\n".join(f"frame {i}: {dict(pf_test)[i]:.2f} dB" for i, *_ in worst))


if __name__ == "__main__":
    main()
