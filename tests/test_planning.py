"""Sample-size planner: the documented formula, the planned size checked by simulating it, and `iclkit plan`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from iclkit.analysis.planning import ci_width, mean_variance, plan_cell, plan_records, plan_table
from iclkit.analysis.stats import mean_ci
from iclkit.analysis.variance import decompose_array
from iclkit.cli import main
from iclkit.errors import IclkitError

# 0/1 correctness with p = 0.5 + episode + order(episode) + query(episode), each uniform(±w): variance w²/3
DEMO, ORDER, QUERY = 0.15, 0.15, 0.10
Z = sps.norm.ppf(0.975)


def draw(rng: np.random.Generator, n_ep: int, n_ord: int, n_q: int, *, crossed: bool = False) -> np.ndarray:
    p = (0.5 + rng.uniform(-DEMO, DEMO, (n_ep, 1, 1, 1)) + rng.uniform(-ORDER, ORDER, (n_ep, 1, n_ord, 1))
         + rng.uniform(-QUERY, QUERY, (1 if crossed else n_ep, 1, 1, n_q)))
    return (rng.random((n_ep, 1, n_ord, n_q)) < p).astype(float)


@pytest.fixture(scope="module")
def pilot():
    """Components measured on a large pilot (close to the truth)."""
    return decompose_array(draw(np.random.default_rng(0), 3000, 2, 16), "nested")


def test_mean_variance_is_the_documented_formula(pilot):
    c = {k: v.variance for k, v in pilot.components.items()}
    for e, o in ((10, 1), (50, 2), (7, 5)):
        flex = c["demonstrations"] / e + c["order"] / (e * o) + c["query"] / (e * 16) + c["residual"] / (e * o * 16)
        assert mean_variance(pilot, episodes=e, orders=o) == pytest.approx(flex)
        assert ci_width(pilot, episodes=e, orders=o) == pytest.approx(2 * Z * math.sqrt(flex))


def test_planned_size_gives_the_target_width_in_simulation(pilot):
    plan = plan_cell(pilot, 0.05, orders=2)
    assert plan.episodes is not None and plan.width is not None
    assert plan.width <= 0.05 < ci_width(pilot, episodes=plan.episodes - 1, orders=2)  # the fewest that do
    rng = np.random.default_rng(1)
    means, widths, covered = [], [], []
    for _ in range(1000):
        y = draw(rng, plan.episodes, 2, 16)
        episode_means = y.mean(axis=(1, 2, 3))
        means.append(y.mean())
        # the CI a user computes from the episodes: t interval over episode means
        half = sps.t.ppf(0.975, plan.episodes - 1) * episode_means.std(ddof=1) / math.sqrt(plan.episodes)
        widths.append(2 * half)
        covered.append(abs(y.mean() - 0.5) <= half)
    assert 2 * Z * np.std(means, ddof=1) == pytest.approx(0.05, rel=0.08)
    assert np.mean(widths) == pytest.approx(0.05, rel=0.08)
    assert np.mean(covered) == pytest.approx(0.95, abs=0.025)


def test_more_orders_need_fewer_episodes_only_when_orders_were_measured(pilot):
    plans = [plan_cell(pilot, 0.05, orders=o).episodes for o in (1, 2, 4, 8)]
    assert plans == sorted(plans, reverse=True) and plans[0] > plans[-1]
    one_order = decompose_array(draw(np.random.default_rng(2), 400, 1, 16), "nested")
    assert plan_cell(one_order, 0.05, orders=1).episodes == plan_cell(one_order, 0.05, orders=8).episodes
    assert "Orders were not varied" in plan_table([plan_cell(one_order, 0.05, orders=4)])


def test_shared_queries_set_a_floor_that_more_episodes_cannot_beat():
    d = decompose_array(draw(np.random.default_rng(3), 400, 1, 8, crossed=True), "crossed")
    floor = 2 * Z * math.sqrt(d.components["query"].variance / 8)
    assert floor > 0.02
    unreachable = plan_cell(d, floor * 0.99)
    assert unreachable.episodes is None and unreachable.width is None
    assert unreachable.floor == pytest.approx(floor)
    reachable = plan_cell(d, floor * 1.2)
    assert reachable.episodes is not None and reachable.width <= floor * 1.2


def test_the_summary_interval_is_the_one_the_summary_reports_with_shared_queries():
    """--same-queries: the generalizing CI has a floor set by the shared queries, the summary's bootstrap over
    episodes does not. Planned for the summary's interval, the summary's own computation (``mean_ci`` over each
    episode's accuracy in its drawn order) gives the target width at the planned size in simulation."""
    d = decompose_array(draw(np.random.default_rng(5), 400, 2, 8, crossed=True), "crossed")
    target = 0.06
    generalizing, summary = plan_cell(d, target), plan_cell(d, target, interval="summary")
    assert generalizing.episodes is None and generalizing.floor > target  # unreachable however many episodes
    assert summary.episodes is not None and summary.floor == 0 and summary.orders == 1
    assert summary.width is not None and summary.width <= target
    rng = np.random.default_rng(6)
    widths = []
    for _ in range(200):
        y = draw(rng, summary.episodes, 2, 8, crossed=True)
        _, low, high = mean_ci(y[:, :, 0, :].mean(axis=(1, 2)).tolist(), seed=0)  # drawn order only, as summarize
        widths.append(high - low)
    assert np.mean(widths) == pytest.approx(target, rel=0.06)
    # the generalizing width the old plan reported for this run size is not what the summary shows
    assert generalizing.measured_width > 1.5 * summary.measured_width


def test_bad_options_are_user_errors(pilot):
    for width in (0, -0.1, float("nan")):
        with pytest.raises(IclkitError, match="ci_width"):
            plan_cell(pilot, width)
    with pytest.raises(IclkitError, match="orders"):
        plan_cell(pilot, 0.05, orders=0)
    with pytest.raises(IclkitError, match="unknown interval") as e:
        plan_cell(pilot, 0.05, interval="bootstrap")  # type: ignore[arg-type]
    assert e.value.field == "interval"


def _records(y: np.ndarray, method: str) -> list[dict]:
    return [{"task": "t", "method": method, "shots": 4, "episode_id": f"t/k4/e{e}", "query_id": f"{e}-{q}",
             "permutation": o, "correct": bool(v)} for (e, _, o, q), v in np.ndenumerate(y)]


def test_plan_records_and_table_per_cell():
    rng = np.random.default_rng(4)
    recs = _records(draw(rng, 30, 2, 8), "icl") + _records(draw(rng, 30, 2, 8), "knn")
    plans = plan_records(recs, 0.1)
    assert [p.decomposition.cell["method"] for p in plans] == ["icl", "knn"]
    table = plan_table(plans).splitlines()
    assert table[0].startswith("| task | method | shots | demonstrations | template | order | query | residual |")
    assert len(table) == 6 and table[2].startswith("| t | icl | 4 | ")
    assert table[-1].startswith("CI planned: generalizing, the CI over new demonstration sets")
    assert f"| {plans[0].episodes} | {plans[0].width:.3f} |" in table[2]


def test_cli_plan_on_a_real_run(tmp_path: Path, capsys):
    from iclkit import evaluate

    evaluate(out=tmp_path / "run", tasks="movie-sentiment", shots=(1,), n_episodes=4, n_query=4,
             model="smollm2-135m-instruct", methods=("icl",), progress=False)
    capsys.readouterr()
    assert main(["plan", str(tmp_path / "run"), "--ci-width", "0.2", "--orders", "2"]) == 0
    out = capsys.readouterr().out
    assert "| movie-sentiment | icl | 1 |" in out and "4 × 1" in out
    assert main(["plan", str(tmp_path / "missing"), "--ci-width", "0.05"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["plan", str(tmp_path / "run"), "--ci-width", "0"]) == 2
    assert "ci_width" in capsys.readouterr().err
    assert main(["plan", str(tmp_path / "run"), "--ci-width", "0.05", "--orders", "0"]) == 2
    assert "orders" in capsys.readouterr().err
    assert main(["plan", str(tmp_path / "run"), "--ci-width", "0.2", "--interval", "summary"]) == 0
    assert "CI planned: summary, the CI summary.json reports" in capsys.readouterr().out
    for bad, field in ((["--interval", "bootstrap"], "interval"),
                       (["--interval", "summary", "--orders", "2"], "orders")):
        assert main(["plan", str(tmp_path / "run"), "--ci-width", "0.2", *bad]) == 2
        assert f"field '{field}'" in capsys.readouterr().err
