"""Where a finished (or partly finished) local run spent its time: one JSON object (issue 19's fixed costs).

    python bench/fixed_costs.py STORE ACTOR

Reads the actor's manifests and reports: each stage's wall seconds (``stats.seconds``; for shard stages
the summed shard seconds and the time spent waiting for upstream shards), assemble's ``phases_s``
(``report.json``: ``steadiness_wait`` is what the frame-by-frame fit held the stage up after the dataset
was written), and the train stage's ``setup`` (``train_report.json``: wall and CPU seconds of fetching
the dataset, the face model, train()'s set-up phases and the first step) beside its step seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("ingest", "landmarks", "masks", "calibrate", "track", "assemble", "train", "render")


def fixed_costs(store: Path, actor: str) -> dict:
    """The figures of one actor's run (module docstring); stages not run are left out."""
    root = store / "actors" / actor
    out: dict = {"store": str(store), "actor": actor, "stages": {}}
    for stage in STAGES:
        path = root / stage / "manifest.json"
        if not path.is_file():
            continue
        stats = json.loads(path.read_text())["stats"]
        keep = ("seconds", "shard_seconds", "shard_waited_s", "shards", "frames", "workers", "detect_s", "render_s",
                "images_per_s", "setup_wall_s")
        out["stages"][stage] = {k: stats[k] for k in keep if k in stats}
    report = root / "assemble" / "report.json"
    if report.is_file():
        r = json.loads(report.read_text())
        out["assemble_phases_s"] = r.get("phases_s", {})
        st = r.get("steadiness", {})
        out["steadiness"] = {k: st.get(k) for k in ("per_frame_fit", "ours_window", "ratio_position", "ratio_rotation",
                                                    "per_frame_fit_device")}
    report = root / "avatar" / "train_report.json"
    if report.is_file():
        r = json.loads(report.read_text())
        out["train"] = {"setup": r.get("setup"), "steps_seconds": r.get("seconds"), "images": r.get("images_this_run"),
                        "gaussians": r.get("gaussians"), "images_per_s": r.get("images_per_s")}
    return out


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[1])
    print(json.dumps(fixed_costs(Path(sys.argv[1]), sys.argv[2]), indent=1))


if __name__ == "__main__":
    main()
