"""Side by side: the same frames of two actors' assemble overlays (mesh + landmarks over the frame).

    python bench/overlay_compare.py ACTOR_DIR_A ACTOR_DIR_B --frames 146 260 272 320 --png out.png [--crop 96,96,416,416] [--zoom 2]

Each ``ACTOR_DIR`` is ``STORE/actors/NAME``; its ``assemble/overlay.mp4`` holds every ``every``-th frame of
the clip (assemble's ``overlay_every`` / ``overlay_max_frames``; the step is read from the two counts).
Rows: the frames; columns: A | B, each cropped to ``--crop`` (x0,y0,x1,y1 in the 512-px frame) and
labelled with the frame number and that actor's landmark error on it (assemble's report). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw


def overlay_frames(actor_dir: Path) -> tuple[list[np.ndarray], int, list[float]]:
    """The overlay's frames ``[H,W,3]``, the clip frames per overlay frame, and per-frame landmark error (px)."""
    with av.open(str(actor_dir / "assemble" / "overlay.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    report = json.loads((actor_dir / "assemble" / "report.json").read_text())
    n = int(report["frames"])
    return frames, max(1, -(-n // len(frames))), report["landmark_error_px"]["per_frame"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--frames", type=int, nargs="+", required=True)
    ap.add_argument("--png", type=Path, required=True)
    ap.add_argument("--crop", default="96,64,416,448")
    ap.add_argument("--zoom", type=int, default=1, help="enlarge each tile this many times (nearest)")
    args = ap.parse_args()
    x0, y0, x1, y1 = (int(v) for v in args.crop.split(","))
    sides = [overlay_frames(d) for d in (args.a, args.b)]
    rows, used = [], []
    for f in args.frames:
        tiles = []
        for (frames, every, err), d in zip(sides, (args.a, args.b)):
            j = min(len(frames) - 1, round(f / every))
            img = Image.fromarray(frames[j][y0:y1, x0:x1])
            img = img.resize((img.width * args.zoom, img.height * args.zoom), Image.NEAREST)
            ImageDraw.Draw(img).text((4, 4), f"{d.parent.parent.name} frame {j * every}: {err[j * every]:.2f} px",
                                     fill=(255, 255, 0))
            tiles.append(np.asarray(img))
        rows.append(np.concatenate(tiles, 1))
        used.append(j * sides[0][1])
    args.png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(args.png)
    print(json.dumps({"png": str(args.png), "frames": used}))


if __name__ == "__main__":
    main()
