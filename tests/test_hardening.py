"""Hostile input: malformed, unicode, empty and huge data give only IclkitError; files cannot run code."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from iclkit.cli import main
from iclkit.data.rows import to_examples
from iclkit.data.sources import available_sources
from iclkit.data.spec import TaskData, TaskSpec
from iclkit.data.tasks import load_task, parse_spec, read_spec
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.errors import IclkitError
from iclkit.learners.icl import ICL
from iclkit.prompts import PromptTemplate, load_prompt, parse_prompt
from iclkit.types import Example

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)
SPEC = TaskSpec(name="t", type="classification", inputs=("text",), labels=(), prompt="default",
                sources=({"kind": "local", "train": "x.jsonl"},))


rows = st.one_of(
    st.dictionaries(st.sampled_from(["text", "label", "other"]), json_values, max_size=3),
    st.fixed_dictionaries({"text": st.one_of(st.text(max_size=8), json_values),
                           "label": st.one_of(st.integers(-3, 5), json_values)}),
)


@SETTINGS
@given(st.lists(rows, max_size=5),
       st.one_of(st.none(), st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3)))
def test_rows_become_examples_or_clear_errors(rows: list, names: list | None) -> None:
    try:
        examples = to_examples(rows, SPEC, "train", file="data.jsonl", line_of=lambda i: i + 1, label_names=names)
    except IclkitError as e:
        assert e.file == "data.jsonl" and e.line is not None
        return
    assert all(isinstance(e.fields["text"], str) and isinstance(e.label, str) and e.label.strip() for e in examples)


text_value = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
good_row = st.fixed_dictionaries({"text": text_value.filter(str.strip),
                                  "label": st.one_of(st.sampled_from(["pos", "neg"]), st.integers(0, 2))},
                                 optional={"other": json_scalars})
any_row = st.fixed_dictionaries({}, optional={"text": st.one_of(text_value, json_scalars),
                                              "label": st.one_of(st.sampled_from(["pos", "neg"]), json_scalars),
                                              "other": json_scalars})
bad_json_line = st.one_of(any_row.map(lambda r: json.dumps(r, ensure_ascii=False)),  # a record, maybe a bad one
                          st.just(""), st.just("  "),  # blank lines are skipped
                          st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\n"),
                                  max_size=20))  # anything else on one line
good_csv_row = st.tuples(text_value.filter(str.strip), st.one_of(st.sampled_from(["pos", "neg"]), text_value))
bad_csv_row = st.one_of(st.tuples(text_value, text_value),  # blank values
                        st.lists(text_value, min_size=1, max_size=3).map(tuple))  # maybe the wrong number of values


@st.composite
def mostly_good(draw: Any, good: Any, bad: Any) -> list:
    """Good items with up to two bad ones anywhere, so that files often load and the first bad line is often not
    the first line."""
    items = draw(st.lists(good, max_size=8))
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), draw(bad))
    return items


json_lines = mostly_good(good_row.map(lambda r: json.dumps(r, ensure_ascii=False)), bad_json_line)
_BREAK = re.compile(r"\r\n|\r|\n")


def _expected_records(suffix: str, text: str, rows: list) -> tuple[list[tuple[int, Any]], Any]:
    """Independently of iclkit: each record's (line, values) as written, or the (line, message) of the first record
    the format itself rejects."""
    if suffix == ".jsonl":
        records = []
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                return records, (lineno, "malformed JSON")
            if not isinstance(obj, dict):
                return records, (lineno, "each line must be a JSON object")
            records.append((lineno, obj))
        return records, None
    records, line = [], 2  # the rows as written by csv.writer after the header line
    for row in rows:
        one = io.StringIO()
        csv.writer(one).writerow(row)
        if len(row) != 2:
            return records, (line, "values, the header")
        records.append((line, {"text": row[0], "label": row[1]}))
        line += len(_BREAK.findall(one.getvalue()))
    return records, None


def _first_bad_value(values: Any) -> str | None:
    """The field a row fails on, by the documented rules: text non-blank text, label non-blank text or an integer."""
    text = values.get("text")
    if not isinstance(text, str) or not text.strip():
        return "text"
    label = values.get("label")
    if isinstance(label, bool) or not isinstance(label, (str, int)) or not str(label).strip():
        return "label"
    return None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.tuples(st.just(".jsonl"), json_lines),
                 st.tuples(st.just(".csv"), mostly_good(good_csv_row, bad_csv_row))))
def test_local_files_load_exactly_or_name_the_first_bad_line(tmp_path_factory: pytest.TempPathFactory,
                                                             content: tuple[str, list]) -> None:
    suffix, items = content  # JSON lines, or CSV rows after a text,label header
    path = tmp_path_factory.mktemp("data") / f"task{suffix}"
    if suffix == ".jsonl":
        text = "\n".join(items)
    else:
        out = io.StringIO()
        csv.writer(out).writerows([("text", "label"), *items])
        text = out.getvalue()
    path.write_text(text, encoding="utf-8", newline="")
    try:
        task = load_task(path)
    except IclkitError as e:
        error = e
    else:
        error = None
    if "\0" in text:
        assert error is not None and error.message.startswith("not a UTF-8 text file")
        return
    text = text.removeprefix("\ufeff")  # a byte order mark is not part of the text
    if not text.strip():
        assert error is not None and (error.file, error.message) == (str(path), "file is empty")
        return
    records, rejected = _expected_records(suffix, text, items)
    bad = next(((line, field) for line, values in records if (field := _first_bad_value(values))), None)
    if bad is not None and (rejected is None or bad[0] < rejected[0]):
        assert error is not None, f"line {bad[0]} is bad ({bad[1]}) but the file loaded"
        assert (error.file, error.line, error.field) == (str(path), *bad), error
        return
    if rejected is not None:
        assert error is not None and (error.file, error.line) == (str(path), rejected[0]), error
        assert rejected[1] in error.message
        return
    if not records:
        assert error is not None and error.file == str(path) and "no rows" in error.message
        return
    pairs = Counter((values["text"], str(values["label"])) for _, values in records)
    held_out = {lab: round(0.5 * n) for lab, n in Counter(lab for _, lab in pairs.elements()).items()}
    if sum(held_out.values()) in (0, len(records)):  # a stratified half: no queries, or no demonstrations
        assert error is not None and "both a train and a test part" in error.message
        return
    assert error is None, error
    assert Counter((e.fields["text"], e.label) for e in task.train + task.test) == pairs
    assert Counter(e.label for e in task.test) == {lab: n for lab, n in held_out.items() if n}
    assert not {e.id for e in task.train} & {e.id for e in task.test}


@SETTINGS
@given(json_values)
def test_task_specs_validate_or_fail_clearly(raw: Any) -> None:
    try:
        spec = parse_spec(raw, "task.yaml")
    except IclkitError as e:
        assert e.file == "task.yaml"
        return
    assert spec.inputs and all(isinstance(x, str) for x in spec.inputs)


def expected_spec(raw: dict, file: Path) -> dict[str, Any]:
    """What a task file that parsed says, by the documented format (defaults, one-or-many, prompt files beside
    the task file), computed from the YAML mapping alone."""
    inputs, source, prompt = raw.get("inputs", ["text"]), raw["source"], raw.get("prompt", "default")
    known = {"name", "type", "inputs", "labels", "prompt", "source", "label_field", "description"}
    return {"name": raw["name"], "type": raw.get("type", "classification"),
            "inputs": tuple([inputs] if isinstance(inputs, str) else inputs),
            "labels": tuple(str(x) for x in raw.get("labels", [])),
            "prompt": os.path.normpath(os.path.join(os.path.abspath(file.parent), prompt))
            if Path(prompt).suffix in (".yaml", ".yml") else prompt,
            "sources": tuple([source] if isinstance(source, dict) else source),
            "label_field": str(raw.get("label_field", "label")), "description": str(raw.get("description", "")),
            "file": str(file), "extra": {k: v for k, v in raw.items() if k not in known}}


def expected_prompt(raw: dict, file: str) -> dict[str, Any]:
    """What a prompt file that parsed says, by the documented format, computed from the mapping alone."""
    stop = raw.get("stop", ["\n"])
    return {"name": str(raw.get("name", Path(file).stem)), "template": raw["template"],
            "target": raw.get("target", " {label}"), "separator": raw.get("separator", "\n\n"),
            "instruction": raw.get("instruction", ""), "verbalizer": {str(k): v for k, v in
                                                                      (raw.get("verbalizer") or {}).items()},
            "stop": tuple(stop if isinstance(stop, list) else [stop]), "file": file}


def same(a: Any, b: Any) -> bool:
    """Equal, counting NaN (YAML's .nan) equal to itself."""
    return a == b or json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True, default=repr)


def spec_fields(spec: TaskSpec) -> dict[str, Any]:
    return {k: getattr(spec, k) for k in ("name", "type", "inputs", "labels", "prompt", "sources", "label_field",
                                          "description", "file", "extra")}


def prompt_fields(prompt: PromptTemplate) -> dict[str, Any]:
    return {k: getattr(prompt, k) for k in ("name", "template", "target", "separator", "instruction", "stop",
                                            "file")} | {"verbalizer": dict(prompt.verbalizer)}


plain = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="{}\0"), max_size=10)
word = plain.filter(str.strip)
task_mappings = st.fixed_dictionaries(
    {"name": word,
     "source": st.one_of(st.fixed_dictionaries({"kind": st.sampled_from(available_sources()), "train": word}),
                         st.lists(st.fixed_dictionaries({"kind": st.sampled_from(available_sources())}),
                                  min_size=1, max_size=2))},
    optional={"type": st.sampled_from(["classification", "generation"]),
              "inputs": st.one_of(word, st.lists(word, min_size=1, max_size=3)),
              "labels": st.lists(st.one_of(word, st.integers()), max_size=4, unique_by=str),
              "prompt": st.one_of(st.sampled_from(["default", "sentiment"]), word.map(lambda w: w + ".yaml"),
                                  word.map(lambda w: f"../{w}/p.yml")),
              "label_field": word, "description": plain, "notes": json_values})
prompt_mappings = st.fixed_dictionaries(
    {"template": st.builds(lambda a, b: f"{a}{{text}}{b}", plain, plain)},
    optional={"name": word, "target": st.builds(lambda a, b: f"{a}{{label}}{b}", plain, plain),
              "separator": plain, "instruction": plain, "verbalizer": st.dictionaries(word, word, max_size=3),
              "stop": st.one_of(plain, st.lists(plain, max_size=2))})


@SETTINGS
@given(st.one_of(st.text(max_size=200), task_mappings.map(yaml.safe_dump), prompt_mappings.map(yaml.safe_dump)))
def test_any_text_as_a_task_or_prompt_file(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    """Any text is either refused with an error naming the file, or read as exactly what its YAML says."""
    folder = tmp_path_factory.mktemp("files")
    for path, read, expected, fields in ((folder / "t.yaml", read_spec, expected_spec, spec_fields),
                                         (folder / "p.yaml", load_prompt, expected_prompt, prompt_fields)):
        path.write_text(text, encoding="utf-8")
        try:
            result = read(path)
        except IclkitError as e:
            assert e.file == str(path), e
            try:  # independently: is it YAML at all?
                yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError:
                assert e.message.startswith("invalid YAML")
            continue
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        got, want = fields(result), expected(raw, path if read is read_spec else str(path))
        assert same(got, want), (got, want)


@SETTINGS
@given(task_mappings, prompt_mappings)
def test_valid_task_and_prompt_files_read_as_written(tmp_path_factory: pytest.TempPathFactory, task: dict,
                                                     prompt: dict) -> None:
    folder = tmp_path_factory.mktemp("files")
    (folder / "t.yaml").write_text(yaml.safe_dump(task), encoding="utf-8")
    (folder / "p.yaml").write_text(yaml.safe_dump(prompt), encoding="utf-8")
    assert same(spec_fields(read_spec(folder / "t.yaml")), expected_spec(task, folder / "t.yaml"))
    assert prompt_fields(load_prompt(folder / "p.yaml")) == expected_prompt(prompt, str(folder / "p.yaml"))


field_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)


@SETTINGS
@given(st.text(max_size=40), st.lists(field_text, min_size=1, max_size=4), field_text)
def test_templates_render_literally_or_are_rejected(template: str, demo_texts: list, query_text: str) -> None:
    try:
        prompt = PromptTemplate(name="p", template=template)
        prompt.check(("text",), ("a", "b"))
    except IclkitError:
        return
    demos = [Example(f"d{i}", {"text": t}, "a") for i, t in enumerate(demo_texts)]
    out = prompt.render(demos, Example("q", {"text": query_text}, "b"), ("a", "b"))
    if "{text}" in template:
        assert query_text in out.context
    assert set(out.continuations) == {"a", "b"}


@SETTINGS
@given(st.one_of(json_values, prompt_mappings))
def test_prompt_mappings_validate_or_fail_clearly(raw: Any) -> None:
    try:
        prompt = parse_prompt(raw, "p.yaml")
    except IclkitError as e:
        assert e.file == "p.yaml"
        return
    assert same(prompt_fields(prompt), expected_prompt(raw, "p.yaml"))


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), field_text.filter(str.strip)), max_size=14),
       st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), field_text.filter(str.strip)), max_size=6),
       st.lists(st.integers(-1, 5), min_size=1, max_size=3), st.integers(-1, 3), st.one_of(st.none(), st.integers(0, 4)),
       st.integers(-1, 5))
def test_episode_sampling_keeps_its_invariants(train: list, test: list, shots: list, n_episodes: int,
                                               n_way: int | None, n_query: int) -> None:
    data = TaskData(SPEC, tuple(Example(f"train-{i}", {"text": t}, lab) for i, (lab, t) in enumerate(train)),
                    tuple(Example(f"test-{i}", {"text": t}, lab) for i, (lab, t) in enumerate(test)), "memory")
    assume(data.labels)
    config = EpisodeConfig(shots=tuple(shots), n_episodes=n_episodes, n_way=n_way, n_query=n_query)
    repeated = len(set(shots)) < len(shots)
    try:
        episodes = sample_episodes(data, config)
    except IclkitError as e:
        if repeated and n_episodes >= 1 and n_query >= 1:
            assert e.field == "shots"
        return
    assert not repeated
    assert len(episodes) == n_episodes * len(shots) == len({ep.id for ep in episodes})
    assert [(ep.index, ep.shots) for ep in episodes] == [(i, k) for i in range(n_episodes) for k in sorted(shots)]
    for ep in episodes:
        assert all(e.label in ep.labels for e in ep.support + ep.query)
        assert len(ep.support) == ep.shots * len(ep.labels)
        assert not {tuple(e.fields.items()) for e in ep.support} & {tuple(e.fields.items()) for e in ep.query}


def test_huge_and_unicode_inputs() -> None:
    huge = "日本語 émoji 🙂 " * 200_000  # ~3 MB of text
    (ex,) = to_examples([{"text": huge, "label": "😀"}], SPEC, "train")
    rendered = PromptTemplate(name="p", template="Q: {text}\nA:").render([ex], ex, ("😀",))
    assert huge in rendered.prefix and rendered.continuations == {"😀": " 😀"}
    with pytest.raises(IclkitError, match="empty text"):
        to_examples([{"text": " \t\n", "label": "x"}], SPEC, "train")


@pytest.mark.parametrize("template", ["{text.__class__}", "{text[0]}", "{0}", "{}", "{text!r}", "{text:>{text}}",
                                      "{text.__init__.__globals__}", "{text", "}{"])
def test_templates_cannot_reach_into_objects(template: str) -> None:
    with pytest.raises(IclkitError):
        PromptTemplate(name="p", template=template)


def test_jinja_like_and_braces_in_data_stay_text() -> None:
    payload = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
    prompt = PromptTemplate(name="p", template=payload + " {text}")
    sneaky = Example("q", {"text": "{label} {text.__class__}"}, "a")
    out = prompt.render([], sneaky, ("a",))
    assert out.context == "{ cycler.__init__.__globals__.os.popen('id').read() } {label} {text.__class__}"


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system",
                                 "!!python/name:os.system", "!!python/module:os"])
def test_yaml_tags_cannot_build_objects(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "pwned"
    for name, read in (("task.yaml", read_spec), ("prompt.yaml", load_prompt)):
        path = tmp_path / name
        path.write_text(f"name: {tag} [\"touch {marker}\"]\ntemplate: '{{text}}'\nsource: {{kind: builtin}}\n")
        with pytest.raises(IclkitError, match="YAML"):
            read(path)
    assert not marker.exists()


def test_task_files_cannot_name_code(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text("name: t\nsource: {kind: builtin, loader: os.system}\n")
    with pytest.raises(IclkitError, match="loader"):
        load_task(path)
    path.write_text("name: t\nsource: {kind: python, module: os}\n")
    with pytest.raises(IclkitError, match="kind"):
        load_task(path)


def test_cli_tracebacks_only_for_bugs_or_debug(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--task", "no-such-task", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iclkit: error: unknown task") and "Traceback" not in err
    with pytest.raises(IclkitError):  # --debug: the exception (and its traceback) surfaces
        main(["--debug", "run", "--task", "no-such-task"])

    def bug(args: Any) -> int:
        raise ZeroDivisionError("a bug, not bad input")

    import iclkit.cli

    monkeypatch.setattr(iclkit.cli, "cmd_tasks", bug)
    with pytest.raises(ZeroDivisionError):  # not swallowed: Python prints the traceback and exits 1
        main(["tasks"])


def test_predictions_do_not_depend_on_batch_size(smol: Any) -> None:
    task = load_task("movie-sentiment")
    (episode,) = sample_episodes(task, EpisodeConfig(shots=(2,), n_episodes=1, n_query=5))
    prompt = load_prompt(task.spec.prompt)
    original = smol.batch_size
    outputs = []
    try:
        for size in (1, 7, 32):
            smol.batch_size = size
            outputs.append(ICL(lm=smol, prompt=prompt).adapt(episode.support, episode.labels).predict(episode.query))
    finally:
        smol.batch_size = original
    for preds in outputs[1:]:
        assert [p.predicted for p in preds] == [p.predicted for p in outputs[0]]
        for p, q in zip(preds, outputs[0]):
            assert p.scores == pytest.approx(q.scores, abs=1e-4)
