"""The task-source extension point: a new ``source: {kind: ...}`` is one registration, and then works through the
real command line like the built-in kinds; an unknown kind is refused naming the task file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

import iclkit.runner.pipeline  # noqa: F401 - imported before any test: its first import sets KMP_* variables (sklearn)
from iclkit.cli import main
from iclkit.data.rows import to_examples
from iclkit.data.sources import available_sources, register_source, unregister_source
from iclkit.data.spec import TaskData, TaskSpec
from iclkit.data.tasks import read_spec
from iclkit.errors import IclkitError

TRAIN = [{"text": f"a {animal} walks by", "label": "animal"} for animal in ("cat", "dog", "horse", "cow")] + \
        [{"text": f"a {plant} grows here", "label": "plant"} for plant in ("fern", "oak", "rose", "moss")]
TEST = [{"text": "a fox runs", "label": "animal"}, {"text": "an elm stands", "label": "plant"},
        {"text": "a bird sings", "label": "animal"}, {"text": "a tulip opens", "label": "plant"},
        {"text": "a mouse hides", "label": "animal"}, {"text": "a vine climbs", "label": "plant"}]


def from_lists(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    """Rows from this module's lists: the whole of a source kind."""
    return TaskData(spec, tuple(to_examples(TRAIN, spec, "train")), tuple(to_examples(TEST, spec, "test")),
                    "python lists")


@pytest.fixture
def lists_kind() -> Iterator[str]:
    register_source("lists")(from_lists)
    try:
        yield "lists"
    finally:
        unregister_source("lists")


def write_task(folder: Path, kind: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "p.yaml").write_text('template: "Thing: {text}\\nKind:"\n')
    path = folder / "task.yaml"
    path.write_text(f"name: things\nlabels: [animal, plant]\nprompt: p.yaml\nsource: {{kind: {kind}}}\n")
    return path


def test_a_registered_kind_runs_through_the_cli(tmp_path, monkeypatch, lists_kind, capsys):
    assert lists_kind in available_sources()
    task = write_task(tmp_path / "task", lists_kind)
    monkeypatch.chdir(tmp_path)  # the task's own prompt file is found beside it, not here
    out = tmp_path / "run"
    assert main(["run", "--task", str(task), "--shots", "0,1", "--episodes", "2", "--n-query", "4",
                 "--methods", "icl", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    test = {f"test-{i}": row for i, row in enumerate(TEST)}
    train = {(row["text"], row["label"]) for row in TRAIN}
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [(ep["index"], ep["shots"]) for ep in episodes] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for ep in episodes:
        assert len(ep["query"]) == 4 and len(ep["support"]) == 2 * ep["shots"]
        assert all({"text": q["fields"]["text"], "label": q["label"]} == test[q["id"]] for q in ep["query"])
        assert all((d["fields"]["text"], d["label"]) in train for d in ep["support"])
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    by_episode = {f"things/k{ep['shots']}/e{ep['index']}": [q["id"] for q in ep["query"]] for ep in episodes}
    assert sorted(by_episode) == sorted({r["episode_id"] for r in records})
    for episode_id, query_ids in by_episode.items():
        mine = [r for r in records if r["episode_id"] == episode_id]
        assert [r["query_id"] for r in mine] == query_ids
        assert all(r["method"] == "icl" and r["gold"] == test[r["query_id"]]["label"] for r in mine)
        assert all(r["prediction"] in ("animal", "plant") for r in mine)


def test_an_unknown_kind_is_refused_naming_the_task_file(tmp_path, lists_kind, capsys):
    task = write_task(tmp_path / "task", "nope")
    assert main(["run", "--task", str(task), "--methods", "icl", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"iclkit: error: {task}: field 'source': ") and "'nope'" in err
    assert "lists" in err  # the registered kinds are the ones offered


def test_unregistering_forgets_the_kind(tmp_path):
    register_source("lists")(from_lists)
    unregister_source("lists")
    assert "lists" not in available_sources()
    with pytest.raises(IclkitError) as e:
        read_spec(write_task(tmp_path / "task", "lists"))
    assert e.value.field == "source"
    with pytest.raises(ValueError):
        unregister_source("local")  # iclkit's own kinds stay
    assert "local" in available_sources()
