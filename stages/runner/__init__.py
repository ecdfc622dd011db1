"""The stage runner: contexts, shards, manifests, progress."""

from stages.runner.context import StageContext, actor_key
from stages.runner.manifest import Manifest
from stages.runner.progress import Progress
from stages.runner.run import StageResult, run_stage
from stages.runner.shards import Shard, plan_shards

__all__ = ["StageContext", "actor_key", "Manifest", "Progress", "StageResult", "run_stage", "Shard", "plan_shards"]
