"""Running learners on episodes: the run configuration, the loop, checkpoints and multi-process sharding."""

from iclkit.runner.execute import RunConfig, RunResult, evaluate, run

__all__ = ["RunConfig", "RunResult", "evaluate", "run"]
