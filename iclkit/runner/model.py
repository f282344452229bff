"""The run's language model: loaded on first use and shared by the stages of a run (plan, execute, collect)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iclkit.lm import ModelSpec, load_lm


class ModelHandle:
    """Loads the model on first use, so baseline-only runs never load it.

    ``plan`` loads it only for ``--shots auto`` (the prompts are sized with the model's own tokenization);
    ``execute`` hands it to the learners; ``collect`` records what was loaded. ``backend`` is the model as its backend
    built it; ``lm`` the same model behind the score cache when one is asked for (scores read back, never recomputed).
    """

    def __init__(self, spec: ModelSpec, score_cache: str | Path | None = None):
        self.spec = spec
        self.score_cache = score_cache
        self.backend: Any = None
        self.lm: Any = None

    @property
    def loaded(self) -> bool:
        """Whether anything asked for the model yet."""
        return self.lm is not None

    def __call__(self) -> Any:
        if self.lm is None:
            self.backend = self.lm = load_lm(self.spec)
            if self.score_cache is not None:
                from iclkit.lm.scorecache import CachedLM

                self.lm = CachedLM(self.backend, self.score_cache)
        return self.lm
