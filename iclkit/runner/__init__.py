"""Running learners on episodes in three stages: ``plan`` (iclkit.runner.plan) → ``execute`` (iclkit.runner.execute)
→ ``collect`` (iclkit.runner.collect), composed by ``run`` (iclkit.runner.pipeline); the run configuration,
checkpoints, multi-process sharding, LM usage and the dry run (iclkit.runner.dryrun) beside them."""

from iclkit.runner.collect import RunResult
from iclkit.runner.config import RunConfig
from iclkit.runner.pipeline import evaluate, run

__all__ = ["RunConfig", "RunResult", "evaluate", "run"]
