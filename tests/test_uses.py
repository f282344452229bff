"""What each learner uses, end to end: label probes and order permutations wired through the runner.

Metric learners fit to their support labels, so on real SST-2 they must fall to chance when the labels are random
and below chance when they are flipped; order-invariant learners must give identical predictions for every
permutation of a support set; bad probe options fail before any work.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iclkit.baselines.common import OuterLoop
from iclkit.baselines.knn import KNN
from iclkit.baselines.linear import Linear
from iclkit.baselines.maml import MAML
from iclkit.baselines.protonet import ProtoNet
from iclkit.baselines.synthetic import Lookup, gaussian_episodes
from iclkit.baselines.transformer import InContextTransformer
from iclkit.cli import main
from iclkit.learners import entry
from iclkit.probes import permute_support
from iclkit.runner.config import RunConfig
from iclkit.runner.pipeline import run

METRIC = ("protonet", "knn", "linear")


@pytest.fixture(scope="module")
def sst2_probes(tmp_path_factory):
    config = RunConfig.from_options({"tasks": "sst2", "shots": "4", "n_episodes": 40, "n_query": 8, "seed": 0,
                                     "methods": ",".join(METRIC), "embed": "minilm",
                                     "labels": "gold,random,flipped"})
    out = tmp_path_factory.mktemp("probes") / "run"
    return run(config, out, progress=False), out


@pytest.mark.parametrize("method", METRIC)
def test_metric_learners_at_chance_with_random_and_below_with_flipped_labels(sst2_probes, method):
    result, _ = sst2_probes
    row = next(r for r in result.uses["labels"] if r["method"] == method)
    gold, rand, flip = (row["probes"][k] for k in ("gold", "random", "flipped"))
    assert row["chance"] == 0.5
    assert gold["ci_low"] > 0.5, f"{method} gold {gold}"  # the embedding carries sentiment: the probe is meaningful
    assert rand["ci_low"] <= 0.5 <= rand["ci_high"], f"{method} random {rand}"
    assert flip["ci_high"] < 0.5, f"{method} flipped {flip}"
    assert row["reliance"]["ci_low"] > 0, f"{method} reliance {row['reliance']}"


def test_main_rows_stay_gold_and_probes_are_recorded(sst2_probes):
    result, out = sst2_probes
    gold = [r for r in result.results if r.info["labels"] == "gold"]
    for row in result.summary:  # the main rows are the gold episodes only
        accs = [r.accuracy for r in gold if r.method == row["method"]]
        assert row["n_episodes"] == 40
        assert row["accuracy"] == round(sum(accs) / len(accs), 4)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {(r["labels"], r["permutation"]) for r in records} == {("gold", 0), ("random", 0), ("flipped", 0)}
    probes = [json.loads(line) for line in (out / "probes.jsonl").read_text().splitlines()]
    assert len(probes) == 2 * 40 and {p["labels"] for p in probes} == {"random", "flipped"}
    flipped = next(p for p in probes if p["labels"] == "flipped")
    assert flipped["probe"]["mapping"] == {"positive": "negative", "negative": "positive"}
    # the perturbed episodes really are what the learners saw: their hashes are in the records
    assert {p["episode_hash"] for p in probes} <= {r["episode_hash"] for r in records}
    assert "labels" in json.loads((out / "summary.json").read_text())


def test_icl_reports_label_reliance_and_permutation_indices(tmp_path):
    config = RunConfig.from_options({"tasks": "sst2", "shots": "2", "n_episodes": 6, "n_query": 4, "seed": 0,
                                     "methods": "icl", "prompt": "sentiment", "labels": "gold,random",
                                     "orders": 2})
    result = run(config, tmp_path / "run", progress=False)
    rel = next(r for r in result.uses["labels"] if r["method"] == "icl")["reliance"]
    assert rel["n_episodes"] == 6 and rel["ci_low"] <= rel["mean"] <= rel["ci_high"] and 0 <= rel["p_value"] <= 1
    perms = {(r.info["labels"], r.info["permutation"]) for r in result.results}
    assert perms == {("gold", 0), ("gold", 1), ("random", 0), ("random", 1)}
    row = next(r for r in result.uses["orders"] if r["method"] == "icl")
    assert row["n_orders"] == 2 and not row["order_invariant"] and 0 <= row["changed_fraction"] <= 1
    assert result.summary[0]["n_episodes"] == 6
    # a permutation's episode differs from the drawn one in demonstration order only
    by = {(r.episode_id, r.info["labels"], r.info["permutation"]): r for r in result.results}
    first = by[("sst2/k2/e0", "gold", 0)], by[("sst2/k2/e0", "gold", 1)]
    assert first[0].episode_hash != first[1].episode_hash


def _result(episode: str, probe: str, perm: int, predicted: str, method: str = "icl"):
    """One synthetic episode result: queries q0..q3 with gold labels a, a, b, b and the given predictions."""
    from iclkit.types import EpisodeResult, Prediction

    preds = tuple(Prediction(f"q{i}", g, p, g == p) for i, (g, p) in enumerate(zip("aabb", predicted)))
    return EpisodeResult(episode, f"{episode}/{probe}/{perm}", "t", method, 2, ("a", "b"), preds,
                         {"labels": probe, "permutation": perm})


# (episode, probe, permutation) → predictions; accuracies in the comments
HAND = {("e0", "gold", 0): "aabb", ("e0", "gold", 1): "abbb",    # 1, .75: q1 changes with the order
        ("e1", "gold", 0): "aaaa", ("e1", "gold", 1): "aaaa",    # .5, .5
        ("e2", "gold", 0): "bbbb", ("e2", "gold", 1): "abba",    # .5, .5: q0 and q3 change
        ("e0", "random", 0): "bbbb", ("e0", "random", 1): "aaaa",  # .5, .5 (random rows never enter order_rows)
        ("e1", "random", 0): "baaa", ("e1", "random", 1): "baaa",  # .25, .25
        ("e2", "random", 0): "abaa", ("e2", "random", 1): "abaa"}  # .25, .25


def test_label_and_order_rows_by_hand():
    """Episode accuracies (mean over orders): gold .875, .5, .5 → .625; random .5, .25, .25 → 1/3. Reliance: paired
    differences .375, .25, .25, mean .2917; of the 2³ sign flips only all-plus and all-minus reach that mean, so
    the exact permutation p is 2/8. Orders (gold only): ranges .25, 0, 0 → 1/12; 3 of 12 queries change."""
    from iclkit.analysis.uses import label_rows, order_rows

    results = [_result(e, probe, perm, pred) for (e, probe, perm), pred in HAND.items()]
    row, = label_rows(results)
    assert row["chance"] == 0.5
    assert {k: (v["accuracy"], v["n_episodes"]) for k, v in row["probes"].items()} == {"gold": (0.625, 3),
                                                                                      "random": (0.3333, 3)}
    rel = row["reliance"]
    assert (rel["mean"], rel["p_value"], rel["n_episodes"]) == (0.2917, 0.25, 3)
    assert 0.25 <= rel["ci_low"] < rel["ci_high"] <= 0.375  # a bootstrap mean of these differences lies there
    invariant = [_result(e, "gold", 0, HAND[(e, "gold", 0)], method="knn") for e in ("e0", "e1", "e2")]
    rows = order_rows(results + invariant, invariant={"t/knn": True})
    assert rows == [{"task": "t", "method": "icl", "shots": 2, "order_invariant": False, "n_orders": 2,
                     "accuracy": 0.625, "ci_low": rows[0]["ci_low"], "ci_high": rows[0]["ci_high"],
                     "mean_range": 0.0833, "changed_fraction": 0.25},
                    {"task": "t", "method": "knn", "shots": 2, "order_invariant": True, "n_orders": 1}]
    assert 0.5 <= rows[0]["ci_low"] < rows[0]["ci_high"] <= 0.875


INVARIANT = {
    "protonet": lambda f: ProtoNet(f),
    "protonet-proj": lambda f: ProtoNet(f, project=True, loop=OuterLoop(10, 1e-2, 4), cache=False,
                                        progress=False, name="protonet-proj"),
    "knn": lambda f: KNN(f),
    "linear": lambda f: Linear(f),
    "maml": lambda f: MAML(f, hidden=32, inner_lr=0.5, loop=OuterLoop(10, 3e-3, 4), cache=False, progress=False),
    "fomaml": lambda f: MAML(f, hidden=32, inner_lr=0.5, first_order=True, loop=OuterLoop(10, 3e-3, 4),
                             cache=False, progress=False, name="fomaml"),
    "transformer": lambda f: InContextTransformer(f, loop=OuterLoop(10, 1e-3, 4), cache=False, progress=False),
}


@pytest.mark.parametrize("name", list(INVARIANT))
def test_order_invariant_learners_predict_the_same_for_every_order(name, one_torch_thread):
    assert not entry(name).capabilities.order_sensitive
    lookup = Lookup()
    learner = INVARIANT[name](lookup)
    if hasattr(learner, "meta_train"):
        learner.meta_train(gaussian_episodes(lookup, "train", 20, n_way=3, shots=3, seed=1))
    for ep in gaussian_episodes(lookup, "test", 4, n_way=3, shots=3, noise=1.5, seed=2):
        orders = permute_support(ep, 5, seed=0)
        assert len(orders) == 5 and len({o.hash for o in orders}) == 5
        preds = [learner.adapt(o.support, o.labels).predict(o.query) for o in orders]
        for other in preds[1:]:
            assert [p.predicted for p in other] == [p.predicted for p in preds[0]]
            for a, b in zip(other, preds[0]):
                for lab in ep.labels:
                    assert a.scores[lab] == pytest.approx(b.scores[lab], rel=1e-4, abs=1e-5)


def test_flipped_needs_two_labels():
    # episodes always have ≥ 2 labels (n_way ≥ 2), so this is the probe's own check, which the runner applies to
    # every episode before any learner runs
    from iclkit.errors import IclkitError
    from iclkit.probes import perturb_labels
    from iclkit.types import Episode, Example

    one = Episode(task="t", index=0, shots=1, seed=0, labels=("yes",), support=(Example("s", {"text": "a"}, "yes"),),
                  query=(Example("q", {"text": "b"}, "yes"),))
    with pytest.raises(IclkitError, match="at least 2 labels"):
        perturb_labels(one, "flipped", 0)


def test_order_sensitive_learners_are_marked():
    assert all(entry(m).capabilities.order_sensitive for m in ("icl", "icl+contextual", "icl+batch", "mann"))


GOOD = [{"text": f"sentence {i}", "label": ["yes", "no"][i % 2]} for i in range(12)]


@pytest.mark.parametrize("args,field", [
    (("--labels", "gold,shuffled"), "labels"),
    (("--orders", "0"), "orders"),
    (("--labels", ","), "labels"),
])
def test_bad_probe_options_fail_before_any_work(tmp_path, capsys, args, field):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in GOOD))
    out = tmp_path / "out"
    code = main(["run", "--no-progress", "--task", str(data), "--methods", "knn", "--shots", "1", "--episodes", "2",
                 "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and field in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


class CountingFirstLabel:
    """Predicts the first demonstration's label; counts its adaptations."""

    name = "first"

    def __init__(self) -> None:
        self.calls = 0

    def describe(self) -> dict:
        return {"method": self.name}

    def adapt(self, support, labels):
        self.calls += 1
        guess = support[0].label
        return _Fixed(guess, tuple(labels))


class _Fixed:
    def __init__(self, guess: str, labels: tuple) -> None:
        self.guess, self.labels = guess, labels

    def predict(self, queries):
        from iclkit.types import Prediction

        scores = {lab: 0.0 if lab == self.guess else -1.0 for lab in self.labels}
        return [Prediction(q.id, q.label, self.guess, q.label == self.guess, scores, scores) for q in queries]


def test_checkpoint_keeps_probes_and_permutations_apart(tmp_path):
    from iclkit.data.tasks import load_task
    from iclkit.episodes import EpisodeConfig, sample_episodes
    from iclkit.probes import perturb_labels
    from iclkit.runner.checkpoint import Checkpoint
    from iclkit.runner.execute import run_method

    eps = sample_episodes(load_task("movie-sentiment"), EpisodeConfig(shots=(2,), n_episodes=3, n_query=3))
    unrelated = [perturb_labels(e, "unrelated", 0).episode for e in eps]
    assert [e.hash for e in unrelated] == [e.hash for e in eps]  # same content: only the info tells them apart
    out = tmp_path / "out"
    variants = [(eps, {"labels": "gold", "permutation": 0}), (unrelated, {"labels": "unrelated", "permutation": 0}),
                ([permute_support(e, 2, 0)[1] for e in eps], {"labels": "gold", "permutation": 1})]
    learner = CountingFirstLabel()
    first = [run_method(learner, e, progress=False, checkpoint=Checkpoint(out, "k"), info=i) for e, i in variants]
    assert learner.calls == 3 * len(eps)  # nothing reused across probes or permutations
    again = CountingFirstLabel()
    resumed = [run_method(again, e, progress=False, checkpoint=Checkpoint(out, "k"), info=i) for e, i in variants]
    assert again.calls == 0 and resumed == first
    assert [r.info["permutation"] for rs in resumed for r in rs] == [0] * 6 + [1] * 3


def test_leaderboard_carries_uses_and_pairs_only_drawn_episodes(sst2_probes):
    import jsonschema

    from iclkit.export.html_report import html_report
    from iclkit.export.leaderboard import build

    result, out = sst2_probes
    board = build([out], reference="protonet")
    schema = json.loads((Path(__file__).parent.parent / "iclkit/export/schema/leaderboard.schema.json").read_text())
    jsonschema.validate(board.to_dict(), schema)
    assert {c["n_episodes"] for c in board.comparisons} == {40}  # probe records are not paired as extra episodes
    assert [r["reliance"] for r in board.uses["labels"]] == [r["reliance"] for r in result.uses["labels"]]
    page = html_report(board)
    assert "What each learner uses" in page and "label reliance" in page and "http://" not in page
    from iclkit.export.markdown import to_markdown

    text = to_markdown(board)  # the markdown leaderboard carries the same tables as the run's summary.md
    for row in result.uses["labels"]:
        rel = row["reliance"]
        assert f"| sst2 | {row['method']} | 4 |" in text and f"{rel['mean']:.3f} [{rel['ci_low']:.3f}" in text


def test_same_queries_share_one_query_set_and_give_a_crossed_design():
    from iclkit.analysis.variance import decompose_records
    from iclkit.data.tasks import load_task
    from iclkit.episodes import EpisodeConfig, sample_episodes
    from iclkit.errors import IclkitError

    task = load_task("agnews")
    config = RunConfig.from_options({"shots": "1,4", "n_episodes": 5, "n_query": 8, "same_queries": True}).episodes
    eps = sample_episodes(task, config)
    assert len({tuple(q.id for q in e.query) for e in eps}) == 1 and len({e.hash for e in eps}) == len(eps)
    assert len({tuple(s.id for s in e.support) for e in eps if e.shots == 4}) == 5  # demonstrations still vary
    query_ids = {q.id for q in eps[0].query}
    assert not query_ids & {s.id for e in eps for s in e.support}  # a demonstration never repeats a query
    default = sample_episodes(task, EpisodeConfig(shots=(1, 4), n_episodes=5, n_query=8))
    assert len({tuple(q.id for q in e.query) for e in default}) > 1
    recs = [{"task": "t", "method": "m", "shots": 4, "episode_id": e.id, "query_id": q.id, "correct": (i + j) % 3 == 0}
            for i, e in enumerate(x for x in eps if x.shots == 4) for j, q in enumerate(e.query)]
    assert decompose_records(recs)[0].design == "crossed"
    with pytest.raises(IclkitError, match="n_way"):
        sample_episodes(task, EpisodeConfig(shots=(1,), n_episodes=2, n_way=2, same_queries=True))


def test_run_folder_has_the_uses_figure_one_row_per_method_and_shots(sst2_probes):
    from matplotlib.image import imread

    from iclkit.export.uses_plot import uses_figure

    result, out = sst2_probes
    assert (out / "plots" / "uses_sst2.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert imread(out / "plots" / "uses_sst2.png").shape[2] in (3, 4)
    fig = uses_figure(result.uses, "sst2")
    reliance, orders, variance = fig.axes[:3]
    assert [t.get_text() for t in reliance.get_yticklabels()] == [f"{m} · k=4" for m in sorted(METRIC)]
    # each method's reliance point sits on its row at the value summary.json gives, its CI bar spans the CI
    points = sorted((tuple(line.get_xydata()[0]) for line in reliance.lines if line.get_marker() == "o"),
                    key=lambda xy: xy[1])
    spans = sorted(((tuple(seg[:, 0]), seg[0, 1]) for c in reliance.collections for seg in c.get_segments()),
                   key=lambda s: s[1])
    for i, method in enumerate(sorted(METRIC)):
        rel = next(r for r in result.uses["labels"] if r["method"] == method)["reliance"]
        assert points[i] == (pytest.approx(rel["mean"]), i)
        assert spans[i] == ((pytest.approx(rel["ci_low"]), pytest.approx(rel["ci_high"])), i)
    # stacked variance shares of a cell add up to 1 (the components partition the total)
    widths = [p.get_width() for p in variance.patches]
    assert len(widths) == 5 * len(METRIC) and sum(widths) == pytest.approx(len(METRIC), abs=1e-3)


def test_no_uses_figure_without_probes(tmp_path):
    config = RunConfig.from_options({"tasks": "movie-sentiment", "shots": "1", "n_episodes": 2, "n_query": 2,
                                     "methods": "protonet", "embed": "minilm"})
    run(config, tmp_path / "run", progress=False)
    assert not list((tmp_path / "run" / "plots").glob("uses_*"))
