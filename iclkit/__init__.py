"""iclkit: in-context learning measured against meta-learning on identical few-shot episodes.

The public names below are imported on first use (PEP 562), so ``import iclkit`` — and every worker process that
only needs the LM path — does not pay for scipy, scikit-learn or the runner until it uses them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_WHERE = {
    "Episode": "types", "EpisodeResult": "types", "Example": "types", "Prediction": "types",
    "IclkitError": "errors",
    "TaskData": "data.spec", "TaskSpec": "data.spec", "load_task": "data.tasks",
    "EpisodeConfig": "episodes", "read_episodes": "episodes", "sample_episodes": "episodes", "write_episodes": "episodes",
    "PromptTemplate": "prompts", "load_prompt": "prompts",
    "LM": "lm", "GenerationRequest": "lm", "LoglikelihoodRequest": "lm", "ModelSpec": "lm", "load_lm": "lm",
    "register_backend": "lm",
    "Capabilities": "learners", "Learner": "learners", "MethodContext": "learners", "register": "learners",
    "SavedRun": "results", "load_run": "results", "verify_run": "verify",
    "RunConfig": "runner.config", "RunResult": "runner.collect", "evaluate": "runner.pipeline", "run": "runner.pipeline",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'iclkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
