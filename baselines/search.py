"""Hyperparameter search for meta-learners on meta-validation episodes only: Optuna's TPE sampler (Bergstra et al.
2011) with a fixed seed and trial budget.

Each trial builds a copy of the learner with the trial's values, meta-trains it on the meta-training episodes with
early stopping, and scores it by its best meta-validation accuracy (``Fitted.curve``). Both episode sets come from
the learner's own budget (``iclkit.metatrain``: held-out source classes, sources or texts); the evaluated task is
never looked at. The chosen values, every trial and the cost go into ``describe()`` (manifest, HTML report), and the
result is cached on disk by everything that moves it, so a second run reuses it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from iclkit.errors import IclkitError
from iclkit.files import atomic_write
from iclkit.metatrain import is_validation, weights_dir
from iclkit.types import Episode, episodes_hash

Space = Callable[[Any], dict[str, Any]]  # optuna.Trial → {learner field or 'loop.<field>': value}
SEARCH_VERSION = 1


@dataclass(frozen=True)
class SearchResult:
    """What a search chose, every trial's values and meta-validation accuracy, and what it cost."""

    chosen: Mapping[str, Any]
    trials: tuple[Mapping[str, Any], ...]
    n_trials: int
    seed: int
    seconds: float
    sampler: str = "optuna TPESampler"

    def to_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "seed": self.seed, "n_trials": self.n_trials, "chosen": dict(self.chosen),
                "trials": [dict(t) for t in self.trials], "seconds": round(self.seconds, 1),
                "objective": "best meta-validation accuracy (early-stopped), never the evaluated task"}


def with_values(learner: Any, values: Mapping[str, Any]) -> Any:
    """A copy of ``learner`` with ``values`` set (``loop.<field>`` sets a field of its outer loop)."""
    loop = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("loop.")}
    fields = {k: v for k, v in values.items() if not k.startswith("loop.")}
    if loop:
        fields["loop"] = dataclasses.replace(learner.loop, **loop)
    return dataclasses.replace(learner, **fields)


def search(learner: Any, space: Space, episodes: Sequence[Episode], n_trials: int, seed: int,
           *, cache: bool = True) -> SearchResult:
    """Run (or reuse) a TPE search of ``space`` for ``learner`` over ``n_trials`` trials; ``learner`` must have
    ``search_trials``, ``fitted`` and ``meta_train``. Without meta-validation episodes there is nothing to choose on:
    an error."""
    if not any(is_validation(ep) for ep in episodes):
        raise IclkitError(f"{learner.name}: a hyperparameter search needs meta-validation episodes, and its "
                          f"meta-training data left none", field="meta_search",
                          hint="raise meta_val_episodes, add meta-training sources, or set meta_search=0")
    key = {"version": SEARCH_VERSION, "learner": {k: v for k, v in learner.describe().items()
                                                  if k not in ("meta_val", "search", "meta_train_data")},
           "space": space.__qualname__, "n_trials": n_trials, "seed": seed}
    path = weights_dir(f"{learner.name}-search", key, episodes_hash(list(episodes)),
                       getattr(learner.featurize, "key", "")) / "search.json"
    if cache and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        return SearchResult(saved["chosen"], tuple(saved["trials"]), saved["n_trials"], saved["seed"],
                            saved["seconds"])
    import optuna

    start = time.perf_counter()
    trials: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        values = space(trial)
        candidate = with_values(learner, {**values, "search_trials": 0, "cache": False, "progress": False})
        candidate.meta_train(episodes)
        best = max(acc for _, acc in candidate.fitted.curve)
        trials.append({**values, "meta_val_accuracy": round(best, 6), "best_step": candidate.fitted.best_step})
        return best

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    result = SearchResult(dict(study.best_trial.params), tuple(trials), n_trials, seed, time.perf_counter() - start)
    if cache:
        atomic_write(path, json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def tune(learner: Any, space: Space, episodes: Sequence[Episode]) -> None:
    """Before meta-training: when ``learner.search_trials`` > 0, search ``space`` on the meta-validation episodes
    and set the chosen values on ``learner`` (recorded as ``learner.searched``)."""
    if not learner.search_trials:
        return
    result = search(learner, space, episodes, learner.search_trials, learner.seed, cache=learner.cache)
    chosen = with_values(learner, result.chosen)
    for f in dataclasses.fields(learner):
        if f.name in result.chosen or (f.name == "loop" and any(k.startswith("loop.") for k in result.chosen)):
            setattr(learner, f.name, getattr(chosen, f.name))
    learner.searched = result
