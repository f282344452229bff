"""Where a cell's score varies: per-query correctness split into demonstration, template, order and query variance.

**Estimator.** ANOVA (method of moments) for a balanced all-random-effects model: each term's mean square is set
equal to its expected value, ``E[MS_X] = Σ_{U ⊇ X} (N / cells_U) σ²_U`` (Cornfield–Tukey rules: U's factors,
nesting factors included, contain X's; ``cells_U`` is the number of level combinations of U's factors), the linear
system is solved, and negative solutions are then set to 0 (the truncated ANOVA estimator; Searle, Casella &
McCulloch 1992, *Variance Components*, ch. 4). On balanced data whose solutions are all positive it equals REML
(``tests/test_variance.py`` checks it against statsmodels' MixedLM with variance components).

**Model.** One cell (task × method × shots) is an array ``y[episode, template, order, query]`` of 0/1 correctness
(or any number). Every query of an episode is scored under every template and every order of that episode.

- ``order`` is nested in ``episode``: permutation 2 of one episode has nothing to do with permutation 2 of another.
- ``template`` is crossed with everything: the same prompts are run on every episode.
- ``query`` is nested in ``episode`` in the default design (``"nested"``: each episode draws its own queries), and
  crossed with it when one query set is shared by every episode (``"crossed"``, ``--same-queries``).

The model has one random term per valid set of factors (a factor never appears together with its nesting factor);
a term with a factor of one level has no degrees of freedom and is left out. The term holding every factor has one
observation per cell, so it also holds the Bernoulli noise. Terms are reported in five components:

- ``demonstrations``: ``episode`` — which demonstration set was drawn.
- ``template``: ``template`` and ``episode×template`` — between prompts.
- ``order``: ``order(episode)`` and ``template×order(episode)`` — between permutations of one support set.
- ``query``: ``query(episode)`` (nested) or ``query`` (crossed) — between queries, stable across orders/templates.
- ``residual``: every other term with ``query`` (query × demonstrations/order/template interactions and noise).

**Why the design matters.** In the nested design "between episodes" mixes demonstration effects with the
difficulty of each episode's own queries: the variance of episode means is ``σ²_demo + σ²_within / n_query``. With
one order and one template the estimator above is the one-way random-effects estimator
``σ²_demo = max(0, (MS_between − MS_within) / n_query)``, which removes that query part; query difficulty and its
interaction with the demonstrations cannot be told apart there and are reported together as ``query``. In the
crossed design the query effect (``query``) and the demonstration effect (``episode``) are separated exactly, and
``episode×query`` is residual.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from iclkit.errors import IclkitError

Design = Literal["nested", "crossed"]
DesignChoice = Literal["auto", "nested", "crossed"]
Factor = Literal["episode", "template", "order", "query"]
FACTORS: tuple[Factor, ...] = ("episode", "template", "order", "query")  # the axes of the array, in this order
COMPONENTS = ("demonstrations", "template", "order", "query", "residual")
CELL_KEYS = ("task", "method", "shots")
ESTIMATOR = ("ANOVA (method of moments): expected mean squares of a balanced random-effects model "
             "(Cornfield-Tukey), negative estimates truncated at 0")
# Record keys, first found wins: episode_id is stable across an episode's permutations (its hash is not).
EPISODE_KEYS = ("episode", "episode_id", "episode_hash")
ORDER_KEYS = ("order", "permutation")
PROMPT_KEYS = ("prompt",)


@dataclass(frozen=True)
class Term:
    """One random term of the model: its ANOVA line and its variance estimate."""

    name: str  # e.g. "order×query(episode)"
    live: tuple[str, ...]  # the factors whose levels the term's effects differ across
    factors: tuple[str, ...]  # live factors plus the factors they are nested in: one effect per combination
    component: str  # which of COMPONENTS it is reported in
    df: int
    sum_sq: float
    mean_sq: float
    estimate: float  # solution of the expected-mean-square equations, before truncation
    variance: float  # max(0, estimate)


@dataclass(frozen=True)
class Component:
    """A reported component: variance (sum of its terms' truncated variances) and share of the total."""

    variance: float
    share: float  # variance / total; nan when the total is 0


@dataclass(frozen=True)
class VarianceDecomposition:
    """The decomposition of one cell: components, the ANOVA terms they come from, and the design's sizes."""

    cell: Mapping[str, Any]
    design: Design
    estimator: str
    levels: Mapping[str, int]  # episodes, templates, orders (per episode), queries (per episode)
    n_observations: int
    mean: float  # the cell's mean correctness (accuracy)
    total: float  # sum of the components: the variance of one observation under the model
    components: Mapping[str, Component]
    terms: tuple[Term, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (nan → None)."""
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        return {**dict(self.cell), "design": self.design, "estimator": self.estimator, "levels": dict(self.levels),
                "n_observations": self.n_observations, "mean": num(self.mean), "total": num(self.total),
                "components": {k: {"variance": num(c.variance), "share": num(c.share)}
                               for k, c in self.components.items()},
                "terms": [{"name": t.name, "component": t.component, "df": t.df, "mean_sq": num(t.mean_sq),
                           "estimate": num(t.estimate), "variance": num(t.variance)} for t in self.terms]}


def _nesting(design: Design) -> dict[str, frozenset[str]]:
    """Factor → the factors it is nested in."""
    return {"episode": frozenset(), "template": frozenset(), "order": frozenset({"episode"}),
            "query": frozenset({"episode"}) if design == "nested" else frozenset()}


def _component(live: frozenset[str]) -> str:
    if "query" in live:
        return "query" if live == {"query"} else "residual"
    if "order" in live:
        return "order"
    if "template" in live:
        return "template"
    return "demonstrations"


def _term_name(live: Sequence[str], dead: Sequence[str]) -> str:
    return "×".join(live) + (f"({','.join(dead)})" if dead else "")


def decompose_array(y: Any, design: Design = "nested", *, cell: Mapping[str, Any] | None = None
                    ) -> VarianceDecomposition:
    """Decompose a balanced array ``y[episode, template, order, query]`` (see the module docstring)."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 4:
        raise IclkitError(f"expected a 4-D array (episode, template, order, query), got shape {y.shape}")
    if np.isnan(y).any():
        raise IclkitError("correctness values must not be NaN")
    n = dict(zip(FACTORS, y.shape))
    if n["episode"] < 2 or n["query"] < 2:
        raise IclkitError(f"a variance decomposition needs at least 2 episodes and 2 queries per episode, got "
                          f"{n['episode']} and {n['query']}", field="episodes")
    nesting = _nesting(design)
    total_n = y.size
    raw: list[tuple[frozenset[str], tuple[str, ...], int, float]] = []  # (factors, live, df, sum of squares)
    for size in range(1, len(FACTORS) + 1):
        for live in itertools.combinations(FACTORS, size):
            dead = frozenset().union(*(nesting[f] for f in live))
            if dead & set(live):
                continue  # a factor together with its nesting factor is not a term
            df = math.prod(n[f] for f in dead) * math.prod(n[f] - 1 for f in live)
            if df == 0:
                continue
            effect = 0.0
            for k in range(len(live) + 1):
                for kept in itertools.combinations(live, k):
                    keep = dead | set(kept)
                    mean = y.mean(axis=tuple(i for i, f in enumerate(FACTORS) if f not in keep), keepdims=True)
                    effect = effect + (-1) ** (len(live) - k) * mean
            effect = np.asarray(effect)
            raw.append((dead | set(live), live, df, float(total_n / effect.size * np.sum(effect ** 2))))
    cells = [math.prod(n[f] for f in factors) for factors, _, _, _ in raw]
    coef = np.array([[total_n / cells[j] if raw[j][0] >= raw[i][0] else 0.0 for j in range(len(raw))]
                     for i in range(len(raw))])
    mean_sq = np.array([ss / df for _, _, df, ss in raw])
    estimates = np.linalg.solve(coef, mean_sq)
    terms = []
    for (factors, live, df, ss), ms, est in zip(raw, mean_sq, estimates):
        dead = [f for f in FACTORS if f in factors and f not in live]
        terms.append(Term(name=_term_name(live, dead), live=tuple(live),
                          factors=tuple(f for f in FACTORS if f in factors), component=_component(frozenset(live)),
                          df=df, sum_sq=ss, mean_sq=float(ms), estimate=float(est), variance=max(0.0, float(est))))
    total = sum(t.variance for t in terms)
    components = {}
    for name in COMPONENTS:
        v = sum(t.variance for t in terms if t.component == name)
        components[name] = Component(variance=v, share=v / total if total > 0 else float("nan"))
    return VarianceDecomposition(
        cell=dict(cell or {}), design=design, estimator=ESTIMATOR,
        levels={"episodes": n["episode"], "templates": n["template"], "orders": n["order"], "queries": n["query"]},
        n_observations=total_n, mean=float(y.mean()), total=total, components=components, terms=tuple(terms))


def _first(rec: Mapping[str, Any], keys: Sequence[str], default: Any = None) -> Any:
    for k in keys:
        if k in rec and rec[k] is not None:
            return rec[k]
    return default


def _cell_name(cell: Mapping[str, Any]) -> str:
    return "/".join(str(v) for v in cell.values())


def cell_array(records: Iterable[Mapping[str, Any]], *, design: DesignChoice = "auto",
               cell: Mapping[str, Any] | None = None) -> tuple[np.ndarray, Design]:
    """One cell's records → the balanced array ``y[episode, template, order, query]`` and its design.

    ``design="auto"`` is crossed when every episode has the same query ids, nested otherwise. An unbalanced cell
    (an episode with fewer orders, prompts or queries than another) is an error: the estimator needs balance.
    """
    where = _cell_name(cell or {})
    scores: dict[Any, dict[tuple[Any, Any, Any], float]] = defaultdict(dict)
    for rec in records:
        episode = _first(rec, EPISODE_KEYS)
        if episode is None or "query_id" not in rec or rec.get("correct") is None:
            raise IclkitError(f"cell {where}: a record lacks an episode, query_id or correct field", field="records",
                              hint=f"records need one of {', '.join(EPISODE_KEYS)}, query_id and correct")
        key = (_first(rec, PROMPT_KEYS, ""), _first(rec, ORDER_KEYS, 0), rec["query_id"])
        if key in scores[episode]:
            raise IclkitError(f"cell {where}: episode {episode} has query {key[2]!r} twice under prompt {key[0]!r}, "
                              f"order {key[1]}", field="records")
        scores[episode][key] = float(rec["correct"])
    if not scores:
        raise IclkitError(f"cell {where}: no records", field="records")
    prompts = sorted({p for s in scores.values() for p, _, _ in s}, key=str)
    layout = {}
    for episode, s in scores.items():
        orders = sorted({o for _, o, _ in s}, key=str)
        queries = sorted({q for _, _, q in s}, key=str)
        if len(s) != len(prompts) * len(orders) * len(queries):
            raise IclkitError(f"cell {where}: episode {episode} is unbalanced: not every query was scored under every "
                              f"prompt ({len(prompts)}) and order ({len(orders)})", field="records")
        layout[episode] = (orders, queries)
    sizes = {(len(o), len(q)) for o, q in layout.values()}
    if len(sizes) > 1:
        raise IclkitError(f"cell {where}: episodes differ in (orders, queries): {sorted(sizes)}; the ANOVA estimator "
                          f"needs a balanced design", field="records")
    shared = len({tuple(q) for _, q in layout.values()}) == 1
    chosen: Design = ("crossed" if shared else "nested") if design == "auto" else design
    if chosen == "crossed" and not shared:
        raise IclkitError(f"cell {where}: the crossed design needs one query set shared by every episode",
                          field="design", hint="use design='nested' (each episode drew its own queries)")
    (n_orders, n_queries), = sizes
    y = np.empty((len(scores), len(prompts), n_orders, n_queries))
    for e, (episode, s) in enumerate(scores.items()):
        orders, queries = layout[episode]
        for t, p in enumerate(prompts):
            for o, order in enumerate(orders):
                for q, query in enumerate(queries):
                    y[e, t, o, q] = s[(p, order, query)]
    return y, chosen


def decompose_records(records: Iterable[Mapping[str, Any]], *, design: DesignChoice = "auto",
                      cell_keys: Sequence[str] = CELL_KEYS) -> list[VarianceDecomposition]:
    """One decomposition per cell of records.jsonl-style records, sorted by cell.

    A record needs ``cell_keys`` (task, method, shots by default; add e.g. a label-probe field to keep probes
    apart), an episode (``episode``, else ``episode_id``, else ``episode_hash``), ``query_id`` and ``correct``;
    ``order`` (or ``permutation``) defaults to 0 and ``prompt`` to "".
    """
    cells: dict[tuple[Any, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for rec in records:
        missing = [k for k in cell_keys if k not in rec]
        if missing:
            raise IclkitError(f"a record lacks {', '.join(missing)}", field="records")
        cells[tuple(rec[k] for k in cell_keys)].append(rec)
    out = []
    for key in sorted(cells, key=lambda k: tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
                                                 for v in k)):
        cell = dict(zip(cell_keys, key))
        y, chosen = cell_array(cells[key], design=design, cell=cell)
        out.append(decompose_array(y, chosen, cell=cell))
    return out
