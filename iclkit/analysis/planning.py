"""Sample-size planning: how many episodes (at a given number of orders) give a 95% CI of a target full width.

FLEX-style sample-size design (Bragg et al. 2021, "FLEX: Unifying Evaluation for Few-Shot NLP"), from the variance
components a run measured (iclkit.analysis.variance). The cell's mean accuracy averages E episodes × T templates ×
O orders × Q queries per episode; under that random-effects model each term U adds its variance divided by the
number of its independent effects the mean averages over:

    Var(mean) = Σ_U σ²_U / cells_U(E, T, O, Q),   cells_U = the product of the level counts of U's factors

so for the default (nested) design with one template

    Var(mean) = σ²_demo/E + σ²_order/(E·O) + σ²_query/(E·Q) + σ²_residual/(E·O·Q)

and with one query set shared by every episode (crossed) the query term is σ²_query/Q: it does not shrink with E.
The CI full width is 2·z·sqrt(Var(mean)), z = Φ⁻¹((1 + confidence)/2). The terms with the episode among their
factors sum to b/E and the others to a floor a, so the fewest episodes reaching width w are

    E = max(2, ceil(b / ((w / 2z)² − a))),

and none exist when the floor alone, 2z·sqrt(a), is at least w. Templates and queries per episode stay as measured
unless given. Variance that a run could not measure is carried where it shows up, which errs towards more episodes:
with one order, order effects are part of the demonstration term and do not shrink with more orders.

**Which interval.** Two CIs of one cell's accuracy answer different questions, and a plan names the one it sizes:

- ``generalizing`` (the default): the interval above, over new demonstration sets, orders, queries and templates
  (when several were run). Query and template main effects form the floor ``a``.
- ``summary``: the interval summary.json reports, a percentile bootstrap over episodes of each episode's accuracy
  (the mean over its prompts, in the drawn order only: ``iclkit.analysis.summary``). It holds the queries and
  templates run fixed, so its variance is only the terms with the episode among their factors, at one order:
  Var = b/E with no floor, and E = max(2, ceil(b / (w/2z)²)). With ``--same-queries`` this CI keeps narrowing with
  more episodes where the generalizing one cannot: it says how precisely the score *on these queries* is known.
  (The bootstrap's width is the normal one up to its plug-in variance, a factor sqrt((E−1)/E).)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

from scipy.stats import norm

from iclkit.analysis.variance import CELL_KEYS, COMPONENTS, DesignChoice, VarianceDecomposition, decompose_records
from iclkit.errors import IclkitError

DEFAULT_CONFIDENCE = 0.95
Interval = Literal["generalizing", "summary"]
INTERVALS: tuple[Interval, ...] = ("generalizing", "summary")
INTERVAL_TEXT = {
    "generalizing": "the CI over new demonstration sets, orders, queries and templates (random-effects model)",
    "summary": "the CI summary.json reports: bootstrap over episodes (drawn order), these queries and templates fixed",
}


@dataclass(frozen=True)
class Plan:
    """The planned design of one cell: episodes (None: unreachable), the width it gives, and the floor."""

    decomposition: VarianceDecomposition
    target_width: float
    confidence: float
    orders: int
    templates: int
    queries: int
    episodes: int | None  # None: no number of episodes reaches the target (the floor is at least as wide)
    width: float | None  # predicted full width at the planned size
    floor: float  # full width with infinitely many episodes
    measured_width: float  # predicted full width at the size the run had
    interval: Interval = "generalizing"  # which CI the widths are of (see the module docstring)


def _sizes(d: VarianceDecomposition, episodes: float, orders: int | None, templates: int | None,
           queries: int | None) -> dict[str, float]:
    return {"episode": episodes, "order": orders or d.levels["orders"], "template": templates or d.levels["templates"],
            "query": queries or d.levels["queries"]}


def _split(d: VarianceDecomposition, sizes: Mapping[str, float]) -> tuple[float, float]:
    """Var(mean) = floor + per_episode / E: the two sums (the episode count in ``sizes`` is ignored)."""
    floor = per_episode = 0.0
    for t in d.terms:
        others = math.prod(sizes[f] for f in t.factors if f != "episode")
        if "episode" in t.factors:
            per_episode += t.variance / others
        else:
            floor += t.variance / others
    return floor, per_episode


def _split_for(d: VarianceDecomposition, sizes: Mapping[str, float], interval: Interval) -> tuple[float, float]:
    """``_split`` for the interval planned: the summary's bootstrap holds queries and templates fixed, so the terms
    without the episode among their factors (its floor) are no variance of it."""
    floor, per_episode = _split(d, sizes)
    return (0.0 if interval == "summary" else floor), per_episode


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise IclkitError(f"confidence must lie in (0, 1), got {confidence}", field="confidence")
    return float(norm.ppf((1 + confidence) / 2))


def mean_variance(d: VarianceDecomposition, *, episodes: int, orders: int | None = None,
                  templates: int | None = None, queries: int | None = None) -> float:
    """Var(cell mean) = Σ_U σ²_U / cells_U at the given sizes (unset ones: as measured)."""
    if episodes < 1:
        raise IclkitError(f"episodes must be at least 1, got {episodes}", field="episodes")
    floor, per_episode = _split(d, _sizes(d, episodes, orders, templates, queries))
    return floor + per_episode / episodes


def ci_width(d: VarianceDecomposition, *, episodes: int, orders: int | None = None, templates: int | None = None,
             queries: int | None = None, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """Full width 2·z·sqrt(Var(mean)) of the normal CI of the cell's mean at the given sizes."""
    return 2 * _z(confidence) * math.sqrt(mean_variance(d, episodes=episodes, orders=orders, templates=templates,
                                                        queries=queries))


def check_plan_options(target_width: float, orders: int | None = None, interval: str = "generalizing") -> None:
    """The planner's user-facing options, checked before any work."""
    if interval not in INTERVALS:
        raise IclkitError(f"unknown interval {interval!r}", field="interval",
                          hint=f"choose from {', '.join(INTERVALS)}")
    if interval == "summary" and orders not in (None, 1):
        raise IclkitError("the summary's CI is over episodes in their drawn order: more orders do not change it",
                          field="orders", hint="leave out --orders, or plan --interval generalizing")
    if not (isinstance(target_width, (int, float)) and math.isfinite(target_width) and target_width > 0):
        raise IclkitError(f"must be a positive number (a full CI width in accuracy units), got {target_width}",
                          field="ci_width", hint="e.g. --ci-width 0.05 for ±2.5 points")
    if orders is not None and orders < 1:
        raise IclkitError(f"must be at least 1, got {orders}", field="orders")


def plan_cell(d: VarianceDecomposition, target_width: float, *, orders: int | None = None,
              queries: int | None = None, confidence: float = DEFAULT_CONFIDENCE,
              interval: Interval = "generalizing") -> Plan:
    """The fewest episodes (at ``orders`` orders; default: as measured) giving a CI of full width ≤ target, for the
    ``interval`` named (see the module docstring)."""
    check_plan_options(target_width, orders, interval)
    z = _z(confidence)
    sizes = _sizes(d, 1, 1 if interval == "summary" else orders, None, queries)
    floor, per_episode = _split_for(d, sizes, interval)
    half = target_width / (2 * z)
    if floor >= half ** 2:
        episodes = None
    elif per_episode == 0:
        episodes = 2
    else:
        # the tiny slack keeps an exact fit (b / gap an integer up to rounding) from being pushed one episode up
        episodes = max(2, math.ceil(per_episode / (half ** 2 - floor) * (1 - 1e-12)))
    width = None if episodes is None else 2 * z * math.sqrt(floor + per_episode / episodes)
    now_floor, now_per_episode = _split_for(d, _sizes(d, 1, 1 if interval == "summary" else None, None, None),
                                            interval)
    measured = 2 * z * math.sqrt(now_floor + now_per_episode / d.levels["episodes"])
    return Plan(decomposition=d, target_width=float(target_width), confidence=confidence, orders=int(sizes["order"]),
                templates=int(sizes["template"]), queries=int(sizes["query"]), episodes=episodes, width=width,
                floor=2 * z * math.sqrt(floor), measured_width=measured, interval=interval)


def plan_records(records: Iterable[Mapping[str, Any]], target_width: float, *, orders: int | None = None,
                 queries: int | None = None, confidence: float = DEFAULT_CONFIDENCE, design: DesignChoice = "auto",
                 cell_keys: Sequence[str] = CELL_KEYS, interval: Interval = "generalizing") -> list[Plan]:
    """Decompose every cell of records.jsonl-style records and plan it (see ``plan_cell``)."""
    check_plan_options(target_width, orders, interval)
    return [plan_cell(d, target_width, orders=orders, queries=queries, confidence=confidence, interval=interval)
            for d in decompose_records(records, design=design, cell_keys=cell_keys)]


def plan_table(plans: Sequence[Plan]) -> str:
    """Plans as a Markdown table: each component as variance (share of the total), then the planned episodes."""
    def comp(d: VarianceDecomposition, name: str) -> str:
        c = d.components[name]
        return f"{c.variance:.4f}" + ("" if math.isnan(c.share) else f" ({c.share:.0%})")

    keys = list(plans[0].decomposition.cell) if plans else list(CELL_KEYS)
    target = f"{plans[0].target_width:g}" if plans else "w"
    lines = ["| " + " | ".join([*keys, *COMPONENTS, "design", "episodes × orders now", "CI width now", "orders",
                                f"episodes for CI width {target}", "CI width then"]) + " |",
             "|" + "---|" * len(keys) + "---:|" * len(COMPONENTS) + "---|---:|---:|---:|---:|---:|"]
    for p in plans:
        d = p.decomposition
        planned = str(p.episodes) if p.episodes is not None else f"none (floor {p.floor:.3f})"
        then = f"{p.width:.3f}" if p.width is not None else "–"
        lines.append("| " + " | ".join([*(str(d.cell[k]) for k in keys), *(comp(d, n) for n in COMPONENTS),
                                        d.design, f"{d.levels['episodes']} × {d.levels['orders']}",
                                        f"{p.measured_width:.3f}", str(p.orders), planned, then]) + " |")
    if plans:
        lines.append(f"\nCI planned: {plans[0].interval}, {INTERVAL_TEXT[plans[0].interval]}.")
    if any(p.orders > p.decomposition.levels["orders"] == 1 for p in plans):
        lines.append("\nOrders were not varied in this run: order effects are counted with the demonstrations, so "
                     "more orders are not credited (the plan errs towards more episodes).")
    return "\n".join(lines)
