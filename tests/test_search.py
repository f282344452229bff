"""The hyperparameter search (Optuna TPE, fixed seed and budget) chooses on meta-validation episodes only, records
every trial, is repeatable, and is reused from the cache."""

from __future__ import annotations

import dataclasses

import pytest

from iclkit.baselines.common import OuterLoop
from iclkit.baselines.maml import MAML
from iclkit.baselines.mann import MANN
from iclkit.baselines.search import search
from iclkit.baselines.synthetic import Lookup, gaussian_episodes
from iclkit.errors import IclkitError
from iclkit.metatrain import VAL_SUFFIX


def _episodes():
    lookup = Lookup()
    train = gaussian_episodes(lookup, "train", 60, n_way=3, shots=2, n_query=3, dim=6, seed=1)
    val = [dataclasses.replace(ep, task=ep.task + VAL_SUFFIX)
           for ep in gaussian_episodes(lookup, "val", 12, n_way=3, shots=2, n_query=3, dim=6, noise=1.0, seed=2)]
    return lookup, train + val


def test_search_sets_the_best_trial_and_records_every_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLKIT_CACHE", str(tmp_path))
    lookup, episodes = _episodes()
    loop = OuterLoop(steps=20, lr=1e-3, meta_batch=4, eval_every=10)
    maml = MAML(lookup, hidden=8, loop=loop, search_trials=4, progress=False)
    maml.meta_train(episodes)
    info = maml.describe()["search"]
    assert info["n_trials"] == 4 and len(info["trials"]) == 4 and info["sampler"] == "optuna TPESampler"
    best = max(info["trials"], key=lambda t: t["meta_val_accuracy"])
    assert info["chosen"] == {k: v for k, v in best.items() if k not in ("meta_val_accuracy", "best_step")}
    assert (maml.inner_steps, maml.inner_lr, maml.hidden) == (best["inner_steps"], best["inner_lr"], best["hidden"])
    assert (maml.loop.lr, maml.loop.steps) == (best["loop.lr"], best["loop.steps"])
    assert maml.loop.eval_every == 10  # what the search does not set stays
    # the same seed gives the same trials; a second learner reuses the cached search
    again = search(MAML(lookup, hidden=8, loop=loop, progress=False, cache=False), _space(), episodes, 4, 0,
                   cache=False)
    assert [t["meta_val_accuracy"] for t in again.trials] == [t["meta_val_accuracy"] for t in info["trials"]]
    cached = MAML(lookup, hidden=8, loop=loop, search_trials=4, progress=False)
    cached.meta_train(episodes)
    assert cached.describe()["search"] == info


def _space():
    from iclkit.baselines.maml import search_space
    return search_space


def test_sequence_learners_search_their_input_design(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLKIT_CACHE", str(tmp_path))
    lookup, episodes = _episodes()
    mann = MANN(lookup, hidden=8, slots=8, width=4, loop=OuterLoop(steps=10, lr=1e-2, meta_batch=4, eval_every=5),
                search_trials=2, progress=False)
    mann.meta_train(episodes)
    chosen = mann.describe()["search"]["chosen"]
    assert set(chosen) == {"input_dim", "input_noise", "loop.lr", "hidden"}
    assert (mann.input_dim, mann.hidden) == (chosen["input_dim"], chosen["hidden"])
    assert mann.shape.dim == (min(mann.input_dim, 6) or 6)  # projected inputs: at most the data's rank


def test_search_needs_meta_validation_episodes():
    lookup, episodes = _episodes()
    maml = MAML(lookup, hidden=8, loop=OuterLoop(steps=5), search_trials=2, progress=False, cache=False)
    with pytest.raises(IclkitError, match="meta-validation"):
        maml.meta_train([ep for ep in episodes if not ep.task.endswith(VAL_SUFFIX)])
