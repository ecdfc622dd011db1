"""bench/fixed_costs.py: the per-stage seconds, assemble's phases and the train set-up of a store."""

import json

from bench_script import load_bench


def test_fixed_costs_reads_manifests_and_reports(tmp_path):
    root = tmp_path / "actors" / "a"
    for stage, stats in (("ingest", {"seconds": 2.0, "frames": 250, "detect_s": 0.5}),
                         ("landmarks", {"shard_seconds": 4.0, "shard_waited_s": 1.0, "shards": 8, "frames": 250}),
                         ("train", {"images_per_s": 1500.0, "setup_wall_s": {"load": 0.1}})):
        (root / stage).mkdir(parents=True)
        (root / stage / "manifest.json").write_text(json.dumps({"stats": stats, "outputs": {}}))
    (root / "assemble").mkdir()
    (root / "assemble" / "report.json").write_text(json.dumps({
        "phases_s": {"steadiness_wait": 0.4}, "steadiness": {"ratio_position": 0.1, "per_frame_fit_device": "cuda"}}))
    (root / "avatar").mkdir()
    setup = {"wall_s": {"fetch_dataset": 0.2, "first_step": 1.0}, "cpu_s": {"fetch_dataset": 0.1, "first_step": 0.5}}
    (root / "avatar" / "train_report.json").write_text(json.dumps({"setup": setup, "seconds": 14.0, "gaussians": 9}))
    out = load_bench("fixed_costs").fixed_costs(tmp_path, "a")
    assert list(out["stages"]) == ["ingest", "landmarks", "train"]  # in pipeline order, those run only
    assert out["stages"]["landmarks"] == {"shard_seconds": 4.0, "shard_waited_s": 1.0, "shards": 8, "frames": 250}
    assert out["assemble_phases_s"] == {"steadiness_wait": 0.4} and out["steadiness"]["ratio_position"] == 0.1
    assert out["train"]["setup"] == setup and out["train"]["steps_seconds"] == 14.0
