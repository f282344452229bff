"""Variance decomposition: recovery of known components in simulations, the design issue (query difficulty vs
demonstrations), a hand computation, the one-way special case against scipy, and REML from statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from iclkit.analysis.variance import COMPONENTS, cell_array, decompose_array, decompose_records
from iclkit.errors import IclkitError

AXES = {"episode": 0, "template": 1, "order": 2, "query": 3}


def simulate(rng: np.random.Generator, shape: tuple[int, int, int, int], sd: dict[tuple[str, ...], float]
             ) -> np.ndarray:
    """Gaussian random-effects data: one independent N(0, sd²) effect per level combination of each factor set."""
    y = np.zeros(shape)
    for factors, s in sd.items():
        size = tuple(n if axis in {AXES[f] for f in factors} else 1 for axis, n in enumerate(shape))
        y = y + rng.normal(0.0, s, size=size)
    return y


def bernoulli_cell(rng: np.random.Generator, n_ep: int, n_ord: int, n_q: int, *, mean: float = 0.5,
                   demo: float = 0.15, order: float = 0.10, query: float = 0.20, crossed: bool = False
                   ) -> np.ndarray:
    """0/1 correctness with p = mean + episode + order(episode) + query effect, each uniform on ±half-width (chosen
    so p stays in [0, 1]). Component variances: w²/3 for half-width w; the residual is E[p(1 − p)]."""
    a = rng.uniform(-demo, demo, size=(n_ep, 1, 1, 1))
    b = rng.uniform(-order, order, size=(n_ep, 1, n_ord, 1))
    d = rng.uniform(-query, query, size=(1 if crossed else n_ep, 1, 1, n_q))
    p = mean + a + b + d
    assert p.min() >= 0 and p.max() <= 1
    return (rng.random((n_ep, 1, n_ord, n_q)) < p).astype(float)


def within(estimates: list[float], truth: float, rel: float) -> None:
    """The mean of repeated estimates is within ``rel`` of the truth and within 4 simulation standard errors,
    and the simulation is precise enough for ``rel`` to mean something (standard error ≤ rel/3 of the truth)."""
    x = np.asarray(estimates)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert se <= rel / 3 * truth, f"simulation too small: se {se:.3g} for truth {truth:.3g}"
    assert abs(x.mean() - truth) <= 4 * se, f"mean {x.mean():.4g} vs truth {truth:.4g} (se {se:.3g})"
    assert abs(x.mean() - truth) <= rel * truth, f"mean {x.mean():.4g} vs truth {truth:.4g}"


def test_bernoulli_components_are_recovered_on_average():
    # truth on the 0/1 scale: uniform(±w) has variance w²/3;
    # the residual is E[p(1 − p)] = mean − mean² − Var(p)
    demo, order, query = 0.15 ** 2 / 3, 0.15 ** 2 / 3, 0.20 ** 2 / 3
    residual = 0.5 - 0.25 - (demo + order + query)
    got: dict[str, list[float]] = {c: [] for c in COMPONENTS}
    for run in range(30):
        d = decompose_array(bernoulli_cell(np.random.default_rng(run), 300, 4, 16, order=0.15), "nested")
        for c in COMPONENTS:
            got[c].append(d.components[c].variance)
    within(got["demonstrations"], demo, 0.10)
    within(got["order"], order, 0.10)
    within(got["query"], query, 0.10)
    within(got["residual"], residual, 0.02)
    assert got["template"] == [0.0] * 30  # one template: no template term at all


NESTED_TRUTH = {("episode",): 0.8, ("template",): 0.6, ("episode", "template"): 0.5, ("episode", "order"): 0.7,
                ("episode", "template", "order"): 0.4, ("episode", "query"): 0.9, ("episode", "template", "query"): 0.3,
                ("episode", "order", "query"): 0.5, ("episode", "template", "order", "query"): 1.0}
TERM_OF = {("episode",): "episode", ("template",): "template", ("episode", "template"): "episode×template",
           ("episode", "order"): "order(episode)", ("episode", "template", "order"): "template×order(episode)",
           ("episode", "query"): "query(episode)", ("episode", "template", "query"): "template×query(episode)",
           ("episode", "order", "query"): "order×query(episode)",
           ("episode", "template", "order", "query"): "template×order×query(episode)"}


def test_every_term_of_the_full_nested_model_is_recovered():
    got: dict[str, list[float]] = {name: [] for name in TERM_OF.values()}
    for run in range(40):
        y = simulate(np.random.default_rng(100 + run), (400, 24, 3, 8),
                     {k: np.sqrt(v) for k, v in NESTED_TRUTH.items()})
        for t in decompose_array(y, "nested").terms:
            got[t.name].append(t.estimate)  # untruncated: the estimator is unbiased before truncation
    for factors, var in NESTED_TRUTH.items():
        # the template main effect has 23 df per data set (one per template): by far the least precise term
        within(got[TERM_OF[factors]], var, 0.20 if factors == ("template",) else 0.05)


def test_crossed_design_separates_query_difficulty_from_demonstrations():
    """Strong query difficulty, no demonstration effect at all."""
    query = 0.35 ** 2 / 3
    naive: dict[str, list[float]] = {"crossed": [], "nested": []}
    demo: dict[str, list[float]] = {"crossed": [], "nested": []}  # truncated, as reported
    raw: dict[str, list[float]] = {"crossed": [], "nested": []}  # before truncation
    query_crossed = []
    for run in range(20):
        rng = np.random.default_rng(200 + run)
        for design in ("crossed", "nested"):
            y = bernoulli_cell(rng, 100, 1, 100, demo=0.0, order=0.0, query=0.35, crossed=design == "crossed")
            d = decompose_array(y, design)
            naive[design].append(y.mean(axis=(1, 2, 3)).var(ddof=1))  # variance of episode means
            demo[design].append(d.components["demonstrations"].variance)
            raw[design].append(next(t.estimate for t in d.terms if t.name == "episode"))
            if design == "crossed":
                query_crossed.append(d.components["query"].variance)
    within(query_crossed, query, 0.15)
    # the naive variance of episode means is the demonstration variance (0) plus the variance of an episode's
    # query average: query difficulty and Bernoulli noise when each episode draws its own queries (total 1/4), only
    # the noise (1/4 − query) when they share them
    assert np.mean(naive["nested"]) == pytest.approx(0.25 / 100, rel=0.05)
    assert np.mean(naive["crossed"]) == pytest.approx((0.25 - query) / 100, rel=0.05)
    for design in ("crossed", "nested"):
        x = np.asarray(raw[design])
        assert abs(x.mean()) <= 4 * x.std(ddof=1) / np.sqrt(x.size)  # unbiased for 0
        assert np.mean(demo[design]) < 0.1 * np.mean(naive[design])  # truncation at 0 leaves a small upward bias


def test_crossed_gaussian_terms_are_recovered():
    truth = {("episode",): 0.5, ("query",): 2.0, ("episode", "query"): 0.4, ("episode", "order"): 0.3,
             ("episode", "order", "query"): 1.0}
    names = {("episode",): "episode", ("query",): "query", ("episode", "query"): "episode×query",
             ("episode", "order"): "order(episode)", ("episode", "order", "query"): "order×query(episode)"}
    got: dict[str, list[float]] = {n: [] for n in names.values()}
    for run in range(30):
        y = simulate(np.random.default_rng(300 + run), (300, 1, 3, 80), {k: np.sqrt(v) for k, v in truth.items()})
        d = decompose_array(y, "crossed")
        for t in d.terms:
            got[t.name].append(t.estimate)
        assert d.components["query"].variance == next(t.variance for t in d.terms if t.name == "query")
        assert d.components["residual"].variance == pytest.approx(
            sum(t.variance for t in d.terms if t.name in ("episode×query", "order×query(episode)")))
    for factors, var in truth.items():
        within(got[names[factors]], var, 0.10)


def test_no_order_variation_gives_order_zero():
    rng = np.random.default_rng(5)
    one_order = bernoulli_cell(rng, 30, 1, 10)
    d = decompose_array(one_order)
    assert d.components["order"].variance == 0.0
    assert not any(t.component == "order" for t in d.terms)
    # an order-invariant method: the same answers under each of 4 orders
    invariant = np.repeat(one_order, 4, axis=2)
    d4 = decompose_array(invariant)
    order_terms = [t for t in d4.terms if t.component == "order"]
    assert order_terms and all(t.sum_sq == pytest.approx(0.0, abs=1e-12) for t in order_terms)
    assert d4.components["order"].variance == 0.0
    assert d4.components["demonstrations"].variance == pytest.approx(d.components["demonstrations"].variance)


def test_hand_computed_two_by_two_by_two():
    # y[episode, order, query]: e0 = [[0, 0], [0, 1]], e1 = [[0, 0], [1, 1]]; grand mean 3/8
    y = np.array([[[0, 0], [0, 1]], [[0, 0], [1, 1]]], dtype=float)[:, None]
    # episode means 1/4, 1/2:                       SS_E = 4·(1/8)² · 2 = 1/8,  df 1, MS 1/8
    # order means (e,o) 0, 1/2 | 0, 1: effects ±1/4, ±1/2:  SS = 2·(2/16 + 2/4) = 5/4, df 2, MS 5/8
    # query means (e,q) 0, 1/2 | 1/2, 1/2: effects ±1/4, 0:  SS = 2·(2/16) = 1/4, df 2, MS 1/8
    # residual y − ȳeo − ȳeq + ȳe: ±1/4 in e0, 0 in e1:   SS = 4/16 = 1/4, df 2, MS 1/8
    # E[MS]: res = σr; query = σr + 2σq; order = σr + 2σo; episode = σr + 2σo + 2σq + 4σe
    # σr = 1/8; σq = (1/8 − 1/8)/2 = 0; σo = (5/8 − 1/8)/2 = 1/4;
    # σe = (1/8 − 5/8 − 1/8 + 1/8)/4 = −1/8 → truncated to 0
    d = decompose_array(y, "nested")
    table = {(t.name, column): value for t in d.terms for column, value in
             zip(("df", "SS", "MS", "estimate", "variance"), (t.df, t.sum_sq, t.mean_sq, t.estimate, t.variance))}
    by_hand = {"episode": (1, 1 / 8, 1 / 8, -1 / 8, 0.0),
               "order(episode)": (2, 5 / 4, 5 / 8, 1 / 4, 1 / 4),
               "query(episode)": (2, 1 / 4, 1 / 8, 0.0, 0.0),
               "order×query(episode)": (2, 1 / 4, 1 / 8, 1 / 8, 1 / 8)}
    assert table == pytest.approx({(name, column): value for name, row in by_hand.items() for column, value in
                                   zip(("df", "SS", "MS", "estimate", "variance"), row)}, abs=1e-12)
    assert d.total == pytest.approx(3 / 8)
    assert d.mean == pytest.approx(3 / 8)
    assert {c: d.components[c].share for c in COMPONENTS} == pytest.approx(
        {"demonstrations": 0.0, "template": 0.0, "order": 2 / 3, "query": 0.0, "residual": 1 / 3})
    assert d.levels == {"episodes": 2, "templates": 1, "orders": 2, "queries": 2}


def test_one_order_one_template_is_the_one_way_estimator():
    rng = np.random.default_rng(11)
    y = bernoulli_cell(rng, 25, 1, 12)
    groups = y[:, 0, 0, :]
    ms_between = groups.shape[1] * groups.mean(axis=1).var(ddof=1)
    ms_within = groups.var(axis=1, ddof=1).mean()
    assert sps.f_oneway(*groups).statistic == pytest.approx(ms_between / ms_within)
    d = decompose_array(y, "nested")
    assert [t.name for t in d.terms] == ["episode", "query(episode)"]
    assert d.components["demonstrations"].variance == pytest.approx(max(0.0, (ms_between - ms_within) / 12))
    assert d.components["query"].variance == pytest.approx(ms_within)


def test_anova_sums_of_squares_add_up_and_total_matches_the_sample_variance():
    rng = np.random.default_rng(3)
    for design in ("nested", "crossed"):
        y = simulate(rng, (40, 3, 4, 10), {("episode",): 0.5, ("episode", "order"): 0.3,
                                           ("episode", "template", "order", "query"): 1.0})
        d = decompose_array(y, design)
        assert sum(t.sum_sq for t in d.terms) == pytest.approx(((y - y.mean()) ** 2).sum())
        assert sum(t.df for t in d.terms) == y.size - 1
        assert sum(c.share for c in d.components.values()) == pytest.approx(1.0)
        assert d.total == pytest.approx(y.var(), rel=0.1)


def _frame(y: np.ndarray):
    import pandas as pd

    e, t, o, q = np.indices(y.shape).reshape(4, -1)
    return pd.DataFrame({"y": y.ravel(), "episode": e, "template": t, "order": o, "query": q,
                         "episode_order": e * 100 + o, "episode_query": e * 100 + q,
                         "episode_template": e * 100 + t, "episode_template_order": (e * 100 + t) * 100 + o,
                         "episode_template_query": (e * 100 + t) * 100 + q,
                         "episode_order_query": (e * 100 + o) * 100 + q, "one": 1})


def _reml(df, vc: dict[str, str], groups: str, re_formula: str) -> dict[str, float]:
    import warnings

    import statsmodels.formula.api as smf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = smf.mixedlm("y ~ 1", df, groups=df[groups], re_formula=re_formula, vc_formula=vc)
        fit = model.fit(reml=True, method=["lbfgs"], maxiter=2000)
    out = dict(zip(model.exog_vc.names, np.asarray(fit.vcomp)))
    if re_formula == "1":
        out["group"] = float(np.asarray(fit.cov_re)[0, 0])
    out["residual"] = float(fit.scale)
    return out


def test_equals_statsmodels_reml_on_balanced_nested_data():
    sd = {("episode",): 1.0, ("episode", "order"): 0.7, ("episode", "query"): 0.8, ("episode", "order", "query"): 0.6}
    y = simulate(np.random.default_rng(21), (12, 1, 3, 6), sd)
    d = decompose_array(y, "nested")
    assert all(t.estimate > 0 for t in d.terms)  # REML equals ANOVA only where no estimate is truncated
    # within a group (episode), C(order) and C(query) are the episode's own levels: nested terms
    reml = _reml(_frame(y), {"order": "0 + C(order)", "query": "0 + C(query)"}, "episode", "1")
    mine = {t.name: t.variance for t in d.terms}
    assert mine == pytest.approx({"episode": reml["group"], "order(episode)": reml["order"],
                                  "query(episode)": reml["query"], "order×query(episode)": reml["residual"]},
                                 rel=2e-3)


def test_equals_statsmodels_reml_on_balanced_crossed_data():
    y = simulate(np.random.default_rng(7), (8, 1, 2, 6), {("episode",): 1.0, ("query",): 1.5,
                                                         ("episode", "query"): 0.5, ("episode", "order"): 0.6,
                                                         ("episode", "order", "query"): 0.4})
    d = decompose_array(y, "crossed")
    assert all(t.estimate > 0 for t in d.terms)
    # crossed factors in statsmodels: one group holding everything, each term a variance component
    reml = _reml(_frame(y), {"episode": "0 + C(episode)", "query": "0 + C(query)",
                             "episode_query": "0 + C(episode_query)", "episode_order": "0 + C(episode_order)"},
                 "one", "0")
    mine = {t.name: t.variance for t in d.terms}
    assert mine == pytest.approx({"episode": reml["episode"], "query": reml["query"],
                                  "episode×query": reml["episode_query"], "order(episode)": reml["episode_order"],
                                  "order×query(episode)": reml["residual"]}, rel=2e-3)


def records_of(y: np.ndarray, *, shared: bool, **cell) -> list[dict]:
    out = []
    for (e, t, o, q), v in np.ndenumerate(y):
        rec = {"task": "sst2", "method": "icl", "shots": 4, **cell, "episode_id": f"sst2/k4/e{e}",
               "episode_hash": f"h{e}-{o}", "query_id": f"q{q}" if shared else f"q{e}-{q}", "correct": bool(v)}
        if y.shape[1] > 1:
            rec["prompt"] = f"p{t}"
        if y.shape[2] > 1:
            rec["permutation"] = o
        out.append(rec)
    return out


def test_records_give_the_same_decomposition_as_the_array():
    rng = np.random.default_rng(8)
    y = bernoulli_cell(rng, 10, 3, 5)
    recs = records_of(y, shared=False) + records_of(bernoulli_cell(rng, 10, 3, 5), shared=False, method="knn")
    out = decompose_records(list(reversed(recs)))
    assert [(d.cell["method"], d.design) for d in out] == [("icl", "nested"), ("knn", "nested")]
    # the episode is its id (stable across permutations), not its hash (one per permutation)
    assert out[0].levels == {"episodes": 10, "templates": 1, "orders": 3, "queries": 5}
    ref = decompose_array(y, "nested")
    assert [t.mean_sq for t in out[0].terms] == pytest.approx([t.mean_sq for t in ref.terms])
    shared = decompose_records(records_of(bernoulli_cell(rng, 6, 2, 4, crossed=True), shared=True))
    assert shared[0].design == "crossed"
    assert shared[0].to_dict()["components"]["query"]["variance"] is not None


def test_unbalanced_or_underspecified_cells_are_user_errors():
    y = bernoulli_cell(np.random.default_rng(9), 4, 2, 3)
    recs = records_of(y, shared=False)
    with pytest.raises(IclkitError, match="unbalanced"):
        cell_array(recs[1:])
    with pytest.raises(IclkitError, match="twice"):
        cell_array(recs + recs[:1])
    with pytest.raises(IclkitError, match="crossed design needs one query set"):
        cell_array(recs, design="crossed")
    with pytest.raises(IclkitError, match="at least 2 episodes"):
        decompose_records([r for r in recs if r["episode_id"].endswith("e0")])
    with pytest.raises(IclkitError, match="lacks"):
        decompose_records([{"task": "t", "method": "m", "shots": 1, "correct": True}])
