"""Prompt templates: rendering, hashing, and refusing anything but plain placeholders."""

from __future__ import annotations

import json

import pytest

from iclkit.data.tasks import load_task, read_spec, registry
from iclkit.errors import IclkitError
from iclkit.paths import shipped_dir
from iclkit.prompts import PromptTemplate, load_prompt, parse_prompt
from iclkit.types import Example

DEMOS = [Example("d1", {"text": "great"}, "positive"), Example("d2", {"text": "awful"}, "negative")]
QUERY = Example("q", {"text": "fine {text} film"}, "positive")


def test_render_is_deterministic_and_split_into_prefix_context_continuations():
    p = load_prompt("sentiment")
    r = p.render(DEMOS, QUERY, ["negative", "positive"])
    assert r == p.render(DEMOS, QUERY, ["negative", "positive"])
    assert r.prefix == "Review: great\nSentiment: positive\n\nReview: awful\nSentiment: negative\n\n"
    assert r.context == "Review: fine {text} film\nSentiment:"  # field values are never re-interpreted
    assert r.continuations == {"negative": " negative", "positive": " positive"}


def test_hash_changes_with_anything_that_changes_the_text():
    p = load_prompt("sentiment")
    q = PromptTemplate(name=p.name, template=p.template, verbalizer={"negative": "bad", "positive": "good"})
    assert p.hash != q.hash and p.hash == load_prompt("sentiment").hash


@pytest.mark.parametrize("template", ["{text.__class__}", "{text[0]}", "{text!r}", "{text:>10}", "{0}", "{}"])
def test_templates_cannot_reach_into_objects(template):
    with pytest.raises(IclkitError):
        PromptTemplate(name="x", template=template)


def test_verbalizer_must_cover_labels_and_fields_must_exist():
    p = load_prompt("sentiment")
    with pytest.raises(IclkitError) as e:
        p.check(["text"], ["negative", "positive", "neutral"])
    assert e.value.field == "verbalizer"
    with pytest.raises(IclkitError) as e:
        p.check(["premise"], ["negative"])
    assert e.value.field == "template"


def test_parse_rejects_bad_types():
    with pytest.raises(IclkitError):
        parse_prompt({"template": "{text}", "verbalizer": {"a": ""}}, "p.yaml")
    with pytest.raises(IclkitError):
        parse_prompt({"template": 3}, "p.yaml")


def test_chat_rendering_puts_the_prompt_in_one_user_turn():
    p = load_prompt("sentiment")

    def apply(msgs):
        return f"<user>{msgs[0]['content']}</user><assistant>"

    r = p.render_chat(DEMOS, QUERY, ["negative", "positive"], apply)
    assert r.prefix.startswith("<user>Review: great") and r.context.endswith("Sentiment:</user><assistant>")
    assert r.continuations["positive"] == "positive"


def test_a_task_files_prompt_file_is_found_beside_it_from_any_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "mytask"
    folder.mkdir()
    (folder / "my_prompt.yaml").write_text('template: "Q: {text}\\nA:"\nverbalizer: {p: good, n: bad}\n')
    (folder / "d.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": "pn"[i % 2]}) + "\n"
                                           for i in range(8)))
    (folder / "task.yaml").write_text("name: mine\nlabels: [p, n]\nprompt: my_prompt.yaml\n"
                                      "source: {kind: local, train: d.jsonl}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "my_prompt.yaml").write_text("template: 'WRONG {text}'\n")  # a decoy in the working directory
    monkeypatch.chdir(elsewhere)
    for spec_path in (folder / "task.yaml", "../mytask/task.yaml"):
        spec = read_spec(spec_path)
        assert spec.prompt == str((folder / "my_prompt.yaml").resolve())
        prompt = load_prompt(spec.prompt)
        assert (prompt.template, dict(prompt.verbalizer)) == ("Q: {text}\nA:", {"p": "good", "n": "bad"})
    task = load_task("../mytask/task.yaml")
    monkeypatch.chdir(tmp_path)  # the resolved path does not depend on where the task was read from
    assert load_prompt(task.spec.prompt).template == "Q: {text}\nA:"


def test_registered_prompt_names_stay_names():
    assert read_spec(registry()["sst2"]).prompt == "sentiment"
    shipped = {p.stem for p in shipped_dir("prompts").glob("*.yaml")}
    assert {read_spec(p).prompt for p in registry().values()} <= shipped
