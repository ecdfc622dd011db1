"""Benchmarks: the end-to-end run on a synthetic clip and the record in docs/benchmarks.{json,md}."""
