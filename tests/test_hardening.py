"""Hostile input: malformed, unicode, empty and huge data give only IclkitError; files cannot run code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from iclkit.cli import main
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.errors import IclkitError
from iclkit.learners.icl import ICL
from iclkit.prompts import PromptTemplate, load_prompt, parse_prompt
from iclkit.data.sources import to_examples
from iclkit.data.tasks import TaskData, TaskSpec, load_task, parse_spec, read_spec
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


lines = st.one_of(
    st.builds(lambda t, lab: json.dumps({"text": t, "label": lab}, ensure_ascii=False),
              st.text(max_size=30), st.one_of(st.sampled_from(["pos", "neg"]), json_scalars)),
    st.text(max_size=30),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines, max_size=8), st.sampled_from([".jsonl", ".csv"]))
def test_local_files_load_or_fail_clearly(tmp_path_factory: pytest.TempPathFactory, content: list,
                                          suffix: str) -> None:
    path = tmp_path_factory.mktemp("data") / f"task{suffix}"
    path.write_text("\n".join(content), encoding="utf-8")
    try:
        task = load_task(path)
    except IclkitError:
        return
    assert task.train and task.test


@SETTINGS
@given(json_values)
def test_task_specs_validate_or_fail_clearly(raw: Any) -> None:
    try:
        spec = parse_spec(raw, "task.yaml")
    except IclkitError as e:
        assert e.file == "task.yaml"
        return
    assert spec.inputs and all(isinstance(x, str) for x in spec.inputs)


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_as_a_task_or_prompt_file(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    folder = tmp_path_factory.mktemp("files")
    for path, read in ((folder / "t.yaml", read_spec), (folder / "p.yaml", load_prompt)):
        path.write_text(text, encoding="utf-8")
        try:
            read(path)
        except IclkitError:
            pass


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
@given(json_values)
def test_prompt_mappings_validate_or_fail_clearly(raw: Any) -> None:
    try:
        parse_prompt(raw, "p.yaml")
    except IclkitError:
        pass


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
    try:
        episodes = sample_episodes(data, config)
    except IclkitError:
        return
    assert len(episodes) == n_episodes * len(set(shots)) or len(episodes) == n_episodes * len(shots)
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
