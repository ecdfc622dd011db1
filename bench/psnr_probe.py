"""Where the held-out error of an avatar comes from (issue 19): error maps and a breakdown by region.

    python bench/psnr_probe.py DATASET_DIR ['{"steps": 500}'] [--preset demo] [--eval-res 256]
        [--save model.pt | --load model.pt] [--png-dir DIR] [--threads 1] [--device cpu]

Trains an avatar with the preset's values (``tiny`` then ``demo`` by default, as bench/demo_train.py;
``--preset full``: the train stage's defaults) plus the JSON overrides, or loads one (``--load``),
renders every held-out frame at ``--eval-res`` and scores it against FlashAvatar's ground truth
(the documented metric: PSNR over the full image of the render against ``img*alpha*neckhead`` on
the background colour). Prints one JSON object: PSNR (mean, worst), and the share of the held-out
squared error that lies

- ``mesh``: where the face model's triangles project (the surface the Gaussians are bound to);
- ``off_mesh_fg``: in the ground-truth head (matte x neckhead > 0.5) but off the mesh (hair, ears,
  the neck below the mesh);
- ``bg``: outside the ground-truth head (the render spills over the background);
- ``below_chin``, ``above_chin``: ``off_mesh_fg`` plus ``bg`` split by the image row of the face
  model's lowest neutral vertex (the chin) in each frame: the neck and collar against the hair;
- ``silhouette``: within ``--band`` px (at 512 px; scaled) of the ground truth's outline (any of
  the above);

and what the PSNR would be if one region's error were zero (an upper bound of fixing it).
``--png-dir``: ground truth | render | error (x4) | regions for a few held-out frames.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def mesh_coverage(verts, faces, R, t, K, size: int):
    """bool [B, H, W]: pixels covered by the projected triangles (cv2.fillPoly, per frame)."""
    import cv2
    import numpy as np

    cam = verts @ R.transpose(1, 2) + t[:, None]
    uv = cam @ K.transpose(1, 2)
    uv = (uv[..., :2] / uv[..., 2:3]).cpu().numpy()
    f = faces.cpu().numpy()
    out = np.zeros((verts.shape[0], size, size), np.uint8)
    for b in range(verts.shape[0]):
        tri = np.rint(uv[b][f] * 16 - 8).astype(np.int32)  # pixel centres at +0.5
        for p in tri:
            cv2.fillConvexPoly(out[b], p, 1, lineType=cv2.LINE_8, shift=4)
    return out > 0


def probe_inputs(dataset: str, preset: str):  # noqa: ANN201
    """What both probes train from: (dataset layout, tracked sequence, stand-in face surface with the
    tracked identity, the preset's train settings: ``{}`` for ``full``, tiny's (+ demo's) otherwise)."""
    from stages.face.model import load_face_model
    from stages.gauss.data import TrackedSequence, find_dataset_root
    from stages.gauss.surface import flame_surface
    from stages.train import PRESETS

    layout = find_dataset_root([p for p in Path(dataset).rglob("*") if p.is_file()])
    seq = TrackedSequence.load(layout)
    surface = flame_surface(load_face_model(None), seq.shape)
    base = {} if preset == "full" else {**PRESETS["tiny"], **(PRESETS["demo"] if preset == "demo" else {})}
    return layout, seq, surface, base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("overrides", nargs="?", default="{}")
    ap.add_argument("--preset", default="demo", choices=["demo", "tiny", "full"])
    ap.add_argument("--eval-res", type=int, default=256)
    ap.add_argument("--save")
    ap.add_argument("--load")
    ap.add_argument("--png-dir")
    ap.add_argument("--band", type=float, default=8.0, help="silhouette band half-width, px at 512")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    import cv2
    import numpy as np
    import torch

    from stages.gauss.data import AvatarFrames, background_rgb, choose_split
    from stages.gauss.trainer import TrainConfig, config_from_dict, load_avatar, render_frames, train, avatar_dict

    torch.set_num_threads(a.threads)
    over = json.loads(a.overrides)
    layout, seq, surface, base = probe_inputs(a.dataset, a.preset)
    train_s = train_cpu = 0.0
    if a.load:
        model, meta = load_avatar(a.load)
        cfg = config_from_dict(meta["train_config"])
    else:
        cfg = TrainConfig(**{**base, **over})
        import tempfile

        import resource

        def cpu() -> float:
            r = resource.getrusage(resource.RUSAGE_SELF)
            return r.ru_utime + r.ru_stime

        t0, c0 = time.monotonic(), cpu()
        with tempfile.TemporaryDirectory() as work:
            res = train(cfg, surface, layout, work, a.device)
        train_s, train_cpu = time.monotonic() - t0, cpu() - c0
        model = res.model
        if a.save:
            torch.save(avatar_dict(model.cpu(), surface, cfg, res.steps, res.images), a.save)
    model = model.to(a.device).eval()
    surface = surface.to(a.device)
    split = choose_split(len(seq), cfg.test_frames, cfg.test_fraction, cfg.max_train_frames)
    frames = AvatarFrames(layout, seq, split.test, a.eval_res, background_rgb(cfg.background))
    bg = torch.tensor(background_rgb(cfg.background), device=a.device)
    s = a.eval_res
    band = max(1, round(a.band * s / 512))
    kern = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    sums = {k: 0.0 for k in ("mesh", "off_mesh_fg", "bg", "silhouette", "below_chin", "above_chin", "all")}
    chin = int(surface.neutral()[:, 1].argmin())
    psnrs, shown = [], []
    renderer = "gsplat" if a.device.startswith("cuda") else "reference"
    with torch.no_grad():
        for i in range(0, len(frames), 8):
            items = [frames[j] for j in range(i, min(i + 8, len(frames)))]
            b = {k: torch.stack([it[k] for it in items]).to(a.device) for k in items[0]}
            img, alpha = render_frames(model, surface, b["cond"], b["R"], b["t"], b["K"], s, bg, renderer)
            img = img.clamp(0, 1)
            gt = frames.ground_truth(b)
            se = ((img - gt) ** 2).sum(-1).cpu().numpy()  # [B, H, W]
            psnrs += (-10 * torch.log10(((img - gt) ** 2).flatten(1).mean(1))).tolist()
            fg = ((b["alpha"].float() / 255) * (b["neckhead"].float() / 255) > 0.5).cpu().numpy()
            verts = surface.vertices(b["cond"])
            mesh = mesh_coverage(verts, surface.faces, b["R"], b["t"], b["K"], s)
            cc = torch.einsum("bij,bj->bi", b["R"], verts[:, chin]) + b["t"]
            chin_row = (torch.einsum("bij,bj->bi", b["K"], cc)[:, 1] / cc[:, 2]).cpu().numpy()
            for k in range(len(items)):
                m = fg[k].astype(np.uint8)
                sil = (cv2.dilate(m, kern) - cv2.erode(m, kern)) > 0
                sums["mesh"] += se[k][mesh[k]].sum()
                sums["off_mesh_fg"] += se[k][fg[k] & ~mesh[k]].sum()
                sums["bg"] += se[k][~fg[k] & ~mesh[k]].sum()
                sums["silhouette"] += se[k][sil].sum()
                below = (np.arange(s)[:, None] > chin_row[k]) & np.ones((1, s), bool)
                sums["below_chin"] += se[k][~mesh[k] & below].sum()
                sums["above_chin"] += se[k][~mesh[k] & ~below].sum()
                sums["all"] += se[k].sum()
                if len(shown) < 4 and (i + k) % 10 == 0:
                    shown.append((gt[k].cpu().numpy(), img[k].cpu().numpy(), se[k], mesh[k], fg[k], sil,
                                  alpha[k].cpu().numpy()))
    n_px = len(frames) * s * s * 3
    tot = sums["all"]
    out = {"preset": a.preset, "overrides": over, "gaussians": model.num_gaussians, "eval_res": s,
           "frames": len(frames), "train_wall_s": round(train_s, 1), "train_cpu_s": round(train_cpu, 1),
           "psnr": round(float(np.mean(psnrs)), 2), "psnr_min": round(float(np.min(psnrs)), 2),
           "psnr_of_mean_mse": round(-10 * np.log10(tot / n_px), 2),
           "share": {k: round(v / tot, 3) for k, v in sums.items() if k != "all"},
           "psnr_if_zero": {k: round(-10 * np.log10(max(tot - v, 1e-12) / n_px), 2)
                            for k, v in sums.items() if k != "all"},
           "load_avg_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(out))
    if a.png_dir and shown:
        from PIL import Image

        d = Path(a.png_dir)
        d.mkdir(parents=True, exist_ok=True)
        rows = []
        for gt, img, se, mesh, fg, sil, alpha in shown:
            err = np.clip(np.sqrt(se / 3) * 4, 0, 1)[..., None].repeat(3, -1)
            reg = np.zeros_like(gt)
            reg[..., 0] = fg
            reg[..., 1] = mesh
            reg[..., 2] = sil
            rows.append(np.concatenate([gt, img, err, reg, alpha[..., None].repeat(3, -1)], 1))
        Image.fromarray((np.concatenate(rows, 0) * 255).round().astype(np.uint8)).save(d / "probe.png")


if __name__ == "__main__":
    main()
