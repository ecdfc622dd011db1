"""The train stage's fixed cost: what runs before its first optimiser step, and that step (prints JSON).

    python bench/train_setup_bench.py --dataset STORE/actors/A/dataset [--device cuda] [--steps 1]
        [--set key=value ...] [--repeat 1] [--reference-hull]

Runs :func:`stages.gauss.trainer.train` with the default preset's :class:`TrainConfig` (``--set`` overrides
fields, e.g. ``--set frame_cache=off``) for ``--steps`` steps (1: the set-up and the first step) in a fresh
work folder, on the dataset an ``avatar run --until assemble`` left, with the face model the stage would use
(the built-in stand-in). Prints ``{"phases": {"wall_s": {...}, "cpu_s": {...}}, "total_wall_s": ..}`` per
repeat (``--reference-hull``: the shell fit's visual-hull votes by the plain
:func:`stages.gauss.shell.hull_votes_reference` on the CPU, the code before the fast path): ``load`` (tracking.npz, the split), ``shell_masks`` (decoding the shell fit's head masks),
``build_avatar`` (sampling, the shell's fit), ``to_device``, ``colours`` (when ``init_color_frames``),
``frame_cache`` (decoding every training frame), ``first_step`` (incl. gsplat's kernels loading on CUDA).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.dataset.layout import DatasetLayout  # noqa: E402
from stages.gauss.data import TrackedSequence  # noqa: E402
from stages.gauss.surface import flame_surface  # noqa: E402
from stages.gauss.trainer import TrainConfig, train  # noqa: E402


def _value(field_type: object, text: str) -> object:
    if text in ("None", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=Path, required=True, help="an assembled dataset folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--reference-hull", action="store_true", help="the shell fit's plain hull votes (the before)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a TrainConfig field")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from stages.face.model import load_face_model
    from stages.gauss import shell

    if args.reference_hull:
        shell.hull_votes = lambda points, sil, chunk=None: shell.hull_votes_reference(  # noqa: E731
            points.cpu(), shell.Silhouettes(*(x.cpu() for x in (sil.masks, sil.R, sil.t, sil.K)))).to(points.device)

    known = {f.name: f.type for f in fields(TrainConfig)}
    over = {}
    for item in args.set:
        k, v = item.split("=", 1)
        if k not in known:
            raise SystemExit(f"unknown TrainConfig field {k!r}")
        over[k] = _value(known[k], v)
    cfg = replace(TrainConfig(), steps=args.steps, checkpoint_every=0, **over)
    layout = DatasetLayout(args.dataset, args.dataset / "checkpoint")
    out = []
    for _ in range(args.repeat):
        t0 = time.monotonic()
        seq = TrackedSequence.load(layout)
        surface = flame_surface(load_face_model(None), seq.shape)
        t_surface = time.monotonic() - t0
        with tempfile.TemporaryDirectory() as work:
            res = train(cfg, surface, layout, work, args.device)
        out.append({"phases": res.setup, "surface_s": round(t_surface, 3),
                    "total_wall_s": round(time.monotonic() - t0, 3), "gaussians": res.model.num_gaussians,
                    "steps": res.steps})
    print(json.dumps({"dataset": str(args.dataset), "device": args.device, "config": over,
                      "reference_hull": args.reference_hull, "runs": out}))


if __name__ == "__main__":
    main()
