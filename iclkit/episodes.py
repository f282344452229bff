"""Seeded N-way K-shot episodes: class-balanced support from train, queries from test, saved with a hash.

For a given (seed, episode index) the classes, the queries and each class's demonstration order are drawn once;
the k-shot support takes the first k of each class, so supports are nested across shot counts (k=1 ⊂ k=4 ⊂ k=8)
and only the number of demonstrations differs between the shot settings of one episode index.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

from iclkit.errors import IclkitError
from iclkit.files import read_json_lines, write_jsonl
from iclkit.data.spec import TaskData
from iclkit.types import Episode, Example, episodes_hash

QueryBalance = Literal["balanced", "natural"]


@dataclass(frozen=True)
class EpisodeConfig:
    """How episodes are drawn. ``n_way=None`` uses all of the task's labels."""

    shots: tuple[int, ...] = (0, 1, 4)
    n_episodes: int = 12
    n_way: int | None = None
    n_query: int = 16
    seed: int = 0
    query_balance: QueryBalance = "balanced"
    # one query set per task, shared by every episode (a crossed design: iclkit.analysis.variance then separates
    # query difficulty from the demonstrations exactly); needs every episode to use all of the task's classes
    same_queries: bool = False


def _near_duplicate_key() -> Callable[[Example], str]:
    """The key a demonstration may not share with a query of its episode: ``iclkit.metatrain.text_key`` (case-folded,
    letters and digits only), the same rule that keeps evaluation texts out of meta-training, so a query's
    re-cased or re-punctuated twin ("What are the Twin Cities ?" / "What are the twin cities ?" in TREC) is never
    one of its demonstrations. Imported here because metatrain imports torch and sampling does not need it."""
    from iclkit.metatrain import text_key

    return text_key


def _by_label(examples: Iterable[Example]) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = {}
    for e in examples:
        out.setdefault(e.label, []).append(e)
    return out


def _pick_queries(rng: random.Random, pools: dict[str, list[Example]], labels: Sequence[str], n: int,
                  balance: QueryBalance) -> list[Example]:
    if balance == "natural":
        pool = [e for lab in labels for e in pools.get(lab, [])]
        return rng.sample(pool, min(n, len(pool)))
    shuffled = {lab: rng.sample(pools.get(lab, []), len(pools.get(lab, []))) for lab in labels}
    picked: list[Example] = []
    while len(picked) < n and any(shuffled.values()):
        for lab in labels:  # round robin: as balanced as the pools allow
            if shuffled[lab] and len(picked) < n:
                picked.append(shuffled[lab].pop())
    rng.shuffle(picked)
    return picked


def sample_episodes(task: TaskData, config: EpisodeConfig, classes: Sequence[str] | None = None) -> list[Episode]:
    """All episodes for every shot count, ordered by (episode index, shots).

    ``classes``: draw episodes from these of the task's classes only (a class-split's held-out evaluation classes;
    ``n_way=None`` then means all of them); None: all of the task's classes, as before."""
    if config.n_episodes < 1 or config.n_query < 1:
        raise IclkitError("n_episodes and n_query must be at least 1")
    if not config.shots:
        raise IclkitError("needs at least one shot count", field="shots")
    if any(k < 0 for k in config.shots):
        raise IclkitError(f"shots must be ≥ 0, got {list(config.shots)}", field="shots")
    repeated = sorted({k for k in config.shots if config.shots.count(k) > 1})
    if repeated:  # each (index, shots) pair is one episode id; a repeated count would give two episodes one id
        raise IclkitError(f"shot count {', '.join(map(str, repeated))} listed more than once in {list(config.shots)}",
                          field="shots")
    if task.spec.type == "generation":
        if config.same_queries:
            raise IclkitError(f"--same-queries is for classification tasks; {task.name!r} has open answers",
                              field="same_queries")
        return _sample_open(task, config)
    labels = task.labels
    if classes is not None:
        unknown = sorted(set(classes) - set(labels))
        if unknown:
            raise IclkitError(f"classes {unknown} are not labels of task {task.name!r}", field="classes")
        labels = tuple(lab for lab in labels if lab in set(classes))  # in the task's order, as without classes
    n_way = config.n_way or len(labels)
    if not 2 <= n_way <= len(labels):
        where = "" if classes is None else " evaluation"
        raise IclkitError(f"n_way={n_way} but task {task.name!r} has {len(labels)}{where} labels", field="n_way")
    train = _by_label(task.train)
    test = _by_label(task.test)
    key = _near_duplicate_key()
    k_max = max(config.shots)
    shared: list[Example] | None = None
    if config.same_queries:
        if n_way < len(labels):
            raise IclkitError(f"--same-queries shares one query set across episodes, so every episode needs all "
                              f"{len(labels)} classes; n_way={n_way} draws a subset", field="same_queries",
                              hint="leave --n-way out")
        shared = _pick_queries(random.Random(f"{config.seed}/{task.name}/queries"), test, list(labels),
                               config.n_query, config.query_balance)
    episodes = []
    for index in range(config.n_episodes):
        rng = random.Random(f"{config.seed}/{task.name}/{index}")
        chosen = sorted(rng.sample(labels, n_way), key=labels.index) if n_way < len(labels) else list(labels)
        query = shared if shared is not None else _pick_queries(rng, test, chosen, config.n_query,
                                                                config.query_balance)
        if not query:
            raise IclkitError(f"task {task.name!r} has no test examples for labels {chosen}")
        seen = {key(q) for q in query}
        orders: dict[str, list[Example]] = {}
        for lab in chosen:
            pool = [e for e in train.get(lab, []) if key(e) not in seen]  # a demo never repeats a query
            if len(pool) < k_max:
                raise IclkitError(
                    f"class {lab!r} of task {task.name!r} has {len(pool)} usable train examples, fewer than k={k_max}",
                    field="shots")
            orders[lab] = rng.sample(pool, k_max)
        for k in sorted(config.shots):
            support = [e for lab in chosen for e in orders[lab][:k]]
            random.Random(f"{config.seed}/{task.name}/{index}/order/{k}").shuffle(support)
            episodes.append(Episode(task=task.name, index=index, shots=k, seed=config.seed,
                                    labels=tuple(chosen), support=tuple(support), query=tuple(query)))
    return episodes


def _sample_open(task: TaskData, config: EpisodeConfig) -> list[Episode]:
    """Open-answer tasks: k random demonstrations, queries from test; no classes."""
    k_max = max(config.shots)
    key = _near_duplicate_key()
    if len(task.train) < k_max:
        raise IclkitError(f"task {task.name!r} has {len(task.train)} train examples, fewer than k={k_max}")
    episodes = []
    for index in range(config.n_episodes):
        rng = random.Random(f"{config.seed}/{task.name}/{index}")
        query = rng.sample(list(task.test), min(config.n_query, len(task.test)))
        seen = {key(q) for q in query}
        demos = rng.sample([e for e in task.train if key(e) not in seen], k_max)
        for k in sorted(config.shots):
            episodes.append(Episode(task=task.name, index=index, shots=k, seed=config.seed, labels=(),
                                    support=tuple(demos[:k]), query=tuple(query)))
    return episodes


def write_episodes(episodes: Sequence[Episode], path: str | Path) -> str:
    """Write episodes as JSONL (atomically); returns the hash over all of them."""
    write_jsonl(path, (ep.to_dict() for ep in episodes))
    return episodes_hash(list(episodes))


def read_episodes(path: str | Path) -> list[Episode]:
    """Load episodes written by write_episodes; each line's hash is checked against its content."""
    path = Path(path)
    episodes = []
    for lineno, d in read_json_lines(path, missing="cannot read episodes: no such file"):
        try:
            episodes.append(Episode.from_dict(d))
        except (KeyError, TypeError) as e:
            raise IclkitError("missing or malformed episode field", file=str(path), line=lineno,
                              field=str(e).strip("'")) from None
        except ValueError as e:
            raise IclkitError(str(e), file=str(path), line=lineno, field="hash") from None
    return episodes
