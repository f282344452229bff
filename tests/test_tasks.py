"""Task files, sources (benchmark folder, local files, built-in, hub) and their validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iclkit.errors import IclkitError
from iclkit.data.tasks import load_task, read_spec, registry


def test_registry_has_benchmark_and_builtin_tasks():
    names = set(registry())
    assert {"sst2", "sst5", "trec", "agnews", "dbpedia", "cb", "rte"} <= names
    assert "movie-sentiment" in names
    assert len([n for n in names if read_spec(registry()[n]).type == "generation"]) >= 3


@pytest.mark.parametrize("name,n_train,n_test,n_labels", [
    ("sst2", 6920, 1821, 2), ("trec", 5452, 500, 6), ("cb", 250, 56, 3), ("rte", 2490, 277, 2),
])
def test_benchmark_tasks_load_from_data_dir(data_dir, name, n_train, n_test, n_labels):
    task = load_task(name)
    assert (len(task.train), len(task.test), len(task.labels)) == (n_train, n_test, n_labels)
    assert str(data_dir) in task.source


def test_sentence_pair_tasks_keep_both_fields(data_dir):
    ex = load_task("cb").train[0]
    assert set(ex.fields) == {"premise", "hypothesis"}
    assert ex.label in ("entailment", "contradiction", "neutral")


def test_builtin_movie_sentiment_from_gensim_file():
    task = load_task("movie-sentiment")
    assert len(task.train) + len(task.test) == 200
    assert task.labels == ("negative", "positive")
    assert {e.label for e in task.test} == {"negative", "positive"}
    assert not {e.id for e in task.train} & {e.id for e in task.test}


@pytest.mark.parametrize("name,query,answer", [
    ("country-capital", "France", "Paris"), ("past-tense", "dancing", "danced"), ("nationality", "France", "French"),
])
def test_word_relation_tasks(name, query, answer):
    task = load_task(name)
    pairs = {e.fields[task.spec.inputs[0]]: e.label for e in task.train + task.test}
    assert pairs[query] == answer
    assert len(pairs) >= 20


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_local_jsonl_file_is_split_into_train_and_held_out_queries(tmp_path):
    rows = [{"text": f"text {i}", "label": "a" if i % 2 else "b"} for i in range(40)]
    task = load_task(str(write_jsonl(tmp_path / "mine.jsonl", rows)))
    assert len(task.train) == 20 and len(task.test) == 20
    assert task.labels == ("a", "b")
    assert load_task(str(tmp_path / "mine.jsonl")).test == task.test  # deterministic split


def test_local_csv_with_custom_fields(tmp_path):
    lines = ["sentence,gold"] + [f"row number {i},{'x' if i % 3 else 'y'}" for i in range(30)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    task = load_task(str(tmp_path / "d.csv"), text_field="sentence", label_field="gold")
    assert set(task.labels) == {"x", "y"}
    assert task.train[0].fields.keys() == {"sentence"}


def test_task_yaml_with_local_source_relative_to_the_file(tmp_path):
    write_jsonl(tmp_path / "tr.jsonl", [{"q": f"q{i}", "y": ["p", "n"][i % 2]} for i in range(10)])
    write_jsonl(tmp_path / "te.jsonl", [{"q": f"t{i}", "y": ["p", "n"][i % 2]} for i in range(6)])
    (tmp_path / "t.yaml").write_text(
        "name: mine\ninputs: [q]\nlabel_field: y\nlabels: [p, n]\nprompt: default\n"
        "source: {kind: local, train: tr.jsonl, test: te.jsonl}\n")
    task = load_task(str(tmp_path / "t.yaml"))
    assert (len(task.train), len(task.test), task.labels) == (10, 6, ("p", "n"))


def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", "label\n')
    with pytest.raises(IclkitError) as e:
        load_task(str(p))
    assert e.value.file == str(p) and e.value.line == 3


@pytest.mark.parametrize("row,field", [({"label": "x"}, "text"), ({"text": "   ", "label": "x"}, "text"),
                                       ({"text": "ok"}, "label")])
def test_missing_or_empty_fields_name_line_and_field(tmp_path, row, field):
    rows = [{"text": "fine", "label": "x"}] * 3 + [row]
    p = write_jsonl(tmp_path / "f.jsonl", rows)
    with pytest.raises(IclkitError) as e:
        load_task(str(p))
    assert (e.value.line, e.value.field) == (4, field)


def test_label_not_in_task_labels(tmp_path):
    write_jsonl(tmp_path / "tr.jsonl", [{"text": "a", "label": "p"}, {"text": "b", "label": "maybe"}])
    (tmp_path / "t.yaml").write_text("name: m\nlabels: [p, n]\nsource: {kind: local, train: tr.jsonl}\n")
    with pytest.raises(IclkitError) as e:
        load_task(str(tmp_path / "t.yaml"))
    assert (e.value.line, e.value.field) == (2, "label") and "maybe" in e.value.message


@pytest.mark.parametrize("text,field", [
    ("labels: [a]\n", "name"), ("name: x\ntype: regression\nsource: {kind: local, train: a.jsonl}\n", "type"),
    ("name: x\n", "source"), ("name: x\nsource: {kind: ftp}\n", "source"),
])
def test_bad_task_yaml(tmp_path, text, field):
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(IclkitError) as e:
        read_spec(tmp_path / "t.yaml")
    assert e.value.field == field


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    (tmp_path / "t.yaml").write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(IclkitError) as e:
        read_spec(tmp_path / "t.yaml")
    assert "invalid YAML" in e.value.message


def test_unreachable_hub_dataset_names_offline_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLKIT_DATA_DIR", str(tmp_path / "nowhere"))
    (tmp_path / "t.yaml").write_text(
        "name: h\nsource:\n  - {kind: data_dir, dir: sst2, train: train.jsonl, test: test.jsonl}\n"
        "  - {kind: hub, id: someone/not-cached}\n")
    with pytest.raises(IclkitError) as e:
        load_task(str(tmp_path / "t.yaml"))
    msg = str(e.value)
    assert "someone/not-cached" in msg and "ICLKIT_DATA_DIR" in msg and "built-in offline tasks" in msg
