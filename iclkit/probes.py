"""Probes of what a learner uses from its support set: perturbed labels and permuted demonstration orders.

Pure and seeded: the same episode, probe and seed always give the same result, drawn from a ``random.Random``
seeded by (seed, episode hash, probe), so episodes of one run get independent draws. Queries and their gold labels
are never touched: a perturbed episode is scored against the true labels.

Label probes (``--labels``), after Min et al. 2022 and Wei et al. 2023:

- ``gold``: the episode as drawn.
- ``random``: each demonstration's label drawn uniformly from the episode's labels.
- ``flipped``: every demonstration's label mapped through one fixed derangement of the episode's labels (no label
  maps to itself; with two labels, swapped), drawn uniformly among derangements.
- ``unrelated``: the gold episode, plus a verbalizer mapping each label to an unrelated word ("foo", "bar", …) that
  an ICL prompt shows instead of the label word (SUL-ICL). Learners that read no verbalizer see it as gold.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Literal, Mapping, Sequence

from iclkit.errors import IclkitError
from iclkit.types import Episode, Example, content_key, stable_hash

LabelProbe = Literal["gold", "random", "flipped", "unrelated"]
LABEL_PROBES: tuple[LabelProbe, ...] = ("gold", "random", "flipped", "unrelated")
_CHOOSE = f"choose from {', '.join(LABEL_PROBES)}"
# Wei et al. 2023 use such words; a number suffix extends the list for tasks with more labels
UNRELATED_WORDS = ("foo", "bar", "baz", "qux", "quux", "corge", "grault", "garply", "waldo", "fred", "plugh",
                   "xyzzy", "thud", "wibble", "wobble", "wubble", "flob", "zot")
_ENUMERATE_UP_TO = 5040  # up to 7 demonstrations, every distinct order is listed; beyond, orders are sampled


@dataclass(frozen=True)
class ProbeRecord:
    """What a label probe did: enough to record in episodes.jsonl and to redo it."""

    kind: LabelProbe
    seed: int
    gold_hash: str  # the unperturbed episode's hash: the perturbed one pairs with it (and by episode index)
    mapping: Mapping[str, str] = field(default_factory=dict)  # flipped: label → label; unrelated: label → word
    support_labels: tuple[str, ...] = ()  # the demonstrations' labels after the probe, in demonstration order

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "gold_hash": self.gold_hash, "mapping": dict(self.mapping),
                "support_labels": list(self.support_labels)}


@dataclass(frozen=True)
class ProbedEpisode:
    """A probed episode and its record. ``hash`` tells probes apart even when the episode content is the same as
    gold's (``unrelated`` always; ``random`` when the draw happens to equal the gold labels)."""

    episode: Episode
    probe: ProbeRecord

    @property
    def hash(self) -> str:
        if self.probe.kind == "gold":
            return self.episode.hash
        return stable_hash({"episode": self.episode.hash, "probe": self.probe.to_dict()})


def parse_label_probes(value: str | Sequence[str]) -> tuple[LabelProbe, ...]:
    """``"gold,random"`` or a list → the probes, in the given order, each once; unknown names are an error."""
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s).strip() for s in value]
    names = [n for n in names if n]
    if not names:
        raise IclkitError("needs at least one label probe", field="labels", hint=_CHOOSE)
    unknown = [n for n in names if n not in LABEL_PROBES]
    if unknown:
        raise IclkitError(f"unknown label probe {', '.join(map(repr, unknown))}", field="labels",
                          hint=_CHOOSE)
    return tuple(dict.fromkeys(n for n in names if n in LABEL_PROBES))  # type: ignore[misc]


def _rng(seed: int, episode: Episode, what: str) -> random.Random:
    return random.Random(f"{seed}/{episode.hash}/{what}")


def _derangement(labels: Sequence[str], rng: random.Random) -> dict[str, str]:
    """A uniformly drawn derangement: shuffles until no label is left in place (about e tries on average)."""
    while True:
        image = list(labels)
        rng.shuffle(image)
        if all(a != b for a, b in zip(labels, image)):
            return dict(zip(labels, image))


def _all_words() -> Iterator[str]:
    return (f"{w}{r or ''}" for r in itertools.count() for w in UNRELATED_WORDS)


def _unrelated_words(n: int, avoid: Sequence[str]) -> list[str]:
    taken = {a.casefold() for a in avoid}
    return list(itertools.islice((w for w in _all_words() if w.casefold() not in taken), n))


def shown_labels(kinds: Sequence[str], label: str, labels: Sequence[str]) -> tuple[str, ...]:
    """Every label the probes ``kinds`` can show on a demonstration of class ``label``, in an episode whose labels
    come from ``labels``: its own (gold always runs), any (``random``), any other (``flipped``)."""
    shown = {label} | (set(labels) if "random" in kinds else set()) | (
        {x for x in labels if x != label} if "flipped" in kinds else set())
    return tuple(dict.fromkeys([label, *(x for x in labels if x in shown)]))


def unrelated_candidates(labels: Sequence[str], n_way: int) -> tuple[str, ...]:
    """Every word ``unrelated`` can show for a label of an episode of at most ``n_way`` labels drawn from
    ``labels``: the word list up to the last word an episode reaches when it has to skip every label."""
    last = _unrelated_words(n_way, labels)[-1]
    words = _all_words()
    return tuple(itertools.takewhile(lambda w: w != last, words)) + (last,)


def perturb_labels(episode: Episode, kind: str, seed: int) -> ProbedEpisode:
    """The episode with its demonstrations' labels perturbed by probe ``kind`` (see the module docstring)."""
    if kind not in LABEL_PROBES:
        raise IclkitError(f"unknown label probe {kind!r}", field="labels", hint=_CHOOSE)
    labels = episode.labels
    if kind != "gold" and not labels:
        raise IclkitError(f"label probe {kind!r} needs a classification episode; {episode.id} has no label set",
                          field="labels")
    if kind == "flipped" and len(labels) < 2:
        raise IclkitError(f"label probe 'flipped' needs at least 2 labels; {episode.id} has {len(labels)}",
                          field="labels", hint="flipping maps every label to another one")
    rng = _rng(seed, episode, kind)
    mapping: dict[str, str] = {}
    support = episode.support
    if kind == "random":
        support = tuple(replace(e, label=rng.choice(labels)) for e in support)
    elif kind == "flipped":
        mapping = _derangement(labels, rng)
        support = tuple(replace(e, label=mapping[e.label]) for e in support)
    elif kind == "unrelated":
        words = _unrelated_words(len(labels), labels)
        rng.shuffle(words)
        mapping = dict(zip(labels, words))
    probed = episode if support == episode.support else replace(episode, support=support, hash="")
    record = ProbeRecord(kind=kind, seed=seed, gold_hash=episode.hash, mapping=mapping,  # type: ignore[arg-type]
                         support_labels=tuple(e.label for e in support))
    return ProbedEpisode(episode=probed, probe=record)


def _distinct_orders(support: Sequence[Example]) -> int:
    """How many different demonstration sequences the support can be put in (equal demonstrations swap freely)."""
    counts = Counter((content_key(e), e.label) for e in support)
    return math.factorial(len(support)) // math.prod(math.factorial(c) for c in counts.values())


def permute_support(episode: Episode, n_orders: int, seed: int) -> list[Episode]:
    """``n_orders`` versions of the episode that differ only in demonstration order: index 0 is the episode as
    drawn, the others distinct seeded permutations. A support with fewer distinct orders than asked for (k! is small
    for few demonstrations) gives all of them, so every episode of one shot count gets the same number."""
    if isinstance(n_orders, bool) or not isinstance(n_orders, int) or n_orders < 1:
        raise IclkitError(f"must be a whole number ≥ 1, got {n_orders!r}", field="orders")
    support = episode.support
    wanted = min(n_orders, _distinct_orders(support))

    def key(order: Sequence[int]) -> tuple[Any, ...]:
        return tuple((content_key(support[i]), support[i].label) for i in order)

    rng = _rng(seed, episode, "orders")
    seen = {key(range(len(support)))}
    orders: list[tuple[int, ...]] = []
    if math.factorial(len(support)) <= _ENUMERATE_UP_TO:
        candidates = list(itertools.permutations(range(len(support))))
        rng.shuffle(candidates)
    else:
        candidates = (tuple(rng.sample(range(len(support)), len(support))) for _ in itertools.count())
    for order in candidates:
        if len(orders) == wanted - 1:
            break
        if key(order) not in seen:
            seen.add(key(order))
            orders.append(order)
    return [episode] + [replace(episode, support=tuple(support[i] for i in order), hash="") for order in orders]


def probe_variants(probed: Sequence[ProbedEpisode], n_orders: int, seed: int) -> list[list[Episode]]:
    """The episodes to run for one probe: list ``i`` holds permutation ``i`` of each episode's support (0: as drawn;
    an episode with fewer distinct orders than asked for is left out of the higher lists)."""
    perms = [permute_support(p.episode, n_orders, seed) if n_orders > 1 else [p.episode] for p in probed]
    return [[ps[i] for ps in perms if i < len(ps)] for i in range(n_orders)]


def probe_lines(probed: Mapping[str, Mapping[str, Mapping[str, ProbedEpisode]]], n_orders: int,
                seed: int) -> list[dict[str, Any]]:
    """probes.jsonl: one line per (episode, label probe) other than gold, with the probe record and the perturbed
    episode's hash, and one line per extra permutation (for order-sensitive learners) with its demonstration order."""
    lines: list[dict[str, Any]] = []
    for by_episode in probed.values():
        for episode_id, by_kind in by_episode.items():
            for kind, p in by_kind.items():
                if kind != "gold":
                    lines.append({"episode_id": episode_id, "labels": kind, "hash": p.hash,
                                  "episode_hash": p.episode.hash, "probe": p.probe.to_dict()})
                if n_orders > 1:
                    for index, ep in enumerate(permute_support(p.episode, n_orders, seed)[1:], start=1):
                        lines.append({"episode_id": episode_id, "labels": kind, "permutation": index,
                                      "episode_hash": ep.hash, "support": [e.id for e in ep.support]})
    return lines
