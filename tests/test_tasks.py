"""Task files, sources (benchmark folder, local files, built-in, hub) and their validation."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

import iclkit.runner.pipeline  # noqa: F401 - imported before any test: its first import sets KMP_* variables (sklearn)
from iclkit.cli import main
from iclkit.data.sources import available_sources
from iclkit.data.sources.hub import quiet_datasets
from iclkit.data.tasks import load_task, read_spec, registry
from iclkit.errors import IclkitError


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


def test_unknown_source_kind_lists_the_registered_kinds(tmp_path):
    (tmp_path / "t.yaml").write_text("name: x\nsource: {kind: ftp, train: a.jsonl}\n")
    with pytest.raises(IclkitError) as e:
        read_spec(tmp_path / "t.yaml")
    assert (e.value.file, e.value.field) == (str(tmp_path / "t.yaml"), "source") and "'ftp'" in e.value.message
    assert {"data_dir", "local", "hub", "builtin"} <= set(available_sources())
    assert all(kind in e.value.message for kind in available_sources())


@pytest.mark.parametrize("content", [b"", b"\n  \n\t\n"])
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_empty_file_is_one_clear_error(tmp_path, content, suffix):
    p = tmp_path / f"empty{suffix}"
    p.write_bytes(content)
    with pytest.raises(IclkitError) as e:
        load_task(str(p))
    assert (e.value.file, e.value.message) == (str(p), "file is empty")


@pytest.mark.parametrize("suffix,content", [
    (".jsonl", b"\x00\x01\xff\xfe garbage \x00" * 10),
    (".jsonl", b'{"text": "caf\xe9", "label": "x"}\n'),  # latin-1, not UTF-8
    (".csv", b"text,label\n\xff\xfe,\x00\n"),
])
def test_binary_file_is_one_clear_error_and_nothing_else_on_stderr(tmp_path, capfd, suffix, content):
    p = tmp_path / f"data{suffix}"
    p.write_bytes(content)
    with pytest.raises(IclkitError) as e:
        load_task(str(p))
    assert e.value.file == str(p) and e.value.message.startswith("not a UTF-8 text file")
    assert capfd.readouterr() == ("", "")
    assert main(["run", "--task", str(p), "--methods", "knn", "--no-progress"]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err == f"iclkit: error: {e.value}\n"


def test_csv_is_read_literally_with_lines_named(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\n"two\nlines, one value",01\nNA,01\n\n007,x\n  spaced  ,x\n', encoding="utf-8")
    task = load_task(str(p))
    got = sorted((e.fields["text"], e.label) for e in task.train + task.test)
    assert got == [("  spaced  ", "x"), ("007", "x"), ("NA", "01"), ("two\nlines, one value", "01")]
    p.write_text('text,label\n"a\nb",x\nc,x\nd,e,x\n', encoding="utf-8")
    with pytest.raises(IclkitError) as e:
        load_task(str(p))
    assert (e.value.line, "3 values, the header 2" in e.value.message) == (5, True)
    p.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(IclkitError, match="only a header line"):
        load_task(str(p))


def test_json_list_file_loads_and_names_the_line_of_a_bad_element(tmp_path):
    p = tmp_path / "d.json"
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(6)]
    p.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    task = load_task(str(p))
    assert sorted((e.fields["text"], e.label) for e in task.train + task.test) == [(r["text"], r["label"]) for r in rows]
    rows[4]["label"] = 2.5
    p.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    with pytest.raises(IclkitError) as e:
        load_task(str(p))
    lines = p.read_text().splitlines()
    assert (e.value.line, e.value.field) == (2 + 4 * 4, "label")  # "[", then 4 lines per element: { text label }
    assert lines[e.value.line - 1] == "  {" and lines[e.value.line + 1].strip() == '"label": 2.5'


def test_loading_leaves_the_datasets_library_settings_alone(tmp_path):
    before = (datasets.logging.get_verbosity(), datasets.utils.are_progress_bars_disabled())
    write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(8)])
    load_task(str(tmp_path / "d.jsonl"))
    load_task("movie-sentiment")
    with pytest.raises(IclkitError):
        load_task(str(write_jsonl(tmp_path / "bad.jsonl", [{"text": "t"}])))
    assert (datasets.logging.get_verbosity(), datasets.utils.are_progress_bars_disabled()) == before


@pytest.mark.parametrize("bars_off", [False, True])
def test_quiet_datasets_is_scoped_and_restores_on_error(bars_off):
    verbosity, was_off = datasets.logging.get_verbosity(), datasets.utils.are_progress_bars_disabled()
    try:
        datasets.logging.set_verbosity_info()
        datasets.disable_progress_bars() if bars_off else datasets.enable_progress_bars()
        with pytest.raises(RuntimeError):
            with quiet_datasets() as ds:
                assert ds.logging.get_verbosity() == datasets.logging.CRITICAL
                assert ds.utils.are_progress_bars_disabled()
                raise RuntimeError("inside")
        assert datasets.logging.get_verbosity() == datasets.logging.INFO
        assert datasets.utils.are_progress_bars_disabled() == bars_off
    finally:
        datasets.logging.set_verbosity(verbosity)
        datasets.disable_progress_bars() if was_off else datasets.enable_progress_bars()


@pytest.mark.parametrize("holdout", ["2", "half", "0"])
def test_bad_holdout_names_the_task_file(tmp_path, holdout):
    write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(8)])
    (tmp_path / "t.yaml").write_text(f"name: m\nsource: {{kind: local, train: d.jsonl, holdout: {holdout}}}\n")
    with pytest.raises(IclkitError) as e:
        load_task(str(tmp_path / "t.yaml"))
    assert (e.value.file, e.value.field) == (str(tmp_path / "t.yaml"), "source.holdout")
