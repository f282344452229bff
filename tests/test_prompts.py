"""Prompt templates: rendering, hashing, and refusing anything but plain placeholders."""

from __future__ import annotations

import pytest

from iclkit.errors import IclkitError
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
