"""Prompt templates: plain data files in ``prompts/`` rendered with restricted format strings.

A template may only name fields (``{text}``); attribute access, indexing, conversions and format specs are
rejected when the file is read, so a template cannot reach into Python objects or run code.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from iclkit.errors import IclkitError
from iclkit.files import read_yaml
from iclkit.paths import shipped_dir
from iclkit.types import Example, stable_hash

_FORMATTER = string.Formatter()


def template_fields(text: str, *, file: str | None = None, key: str = "template") -> tuple[str, ...]:
    """Field names used by a format string; anything but plain ``{name}`` is an error."""
    names = []
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as e:
        raise IclkitError(f"bad template: {e}", file=file, field=key) from None
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise IclkitError(f"only plain {{field}} placeholders are allowed, got {{{name}}}", file=file, field=key)
        names.append(name)
    return tuple(names)


def fill(text: str, values: Mapping[str, str]) -> str:
    """Substitute plain placeholders (validated by template_fields) without str.format's object access."""
    out = []
    for literal, name, _, _ in _FORMATTER.parse(text):
        out.append(literal)
        if name is not None:
            out.append(values[name])
    return "".join(out)


@dataclass(frozen=True)
class Rendered:
    """A rendered k-shot prompt: ``prefix`` (instruction + demonstrations, shared by an episode's queries),
    ``context`` (this query), and one continuation per candidate label."""

    prefix: str
    context: str
    continuations: Mapping[str, str]
    target: str  # the gold answer's continuation text


@dataclass(frozen=True)
class PromptTemplate:
    """Instruction, per-example template, target, separator and verbalizer (label → word).

    ``domain_premise``: the text DC-PMI calibration scores each answer after, with no input (Holtzman et al. 2021);
    ``None`` derives it from the template (``answer_cue``)."""

    name: str
    template: str
    target: str = " {label}"
    separator: str = "\n\n"
    instruction: str = ""
    verbalizer: Mapping[str, str] = field(default_factory=dict)
    stop: tuple[str, ...] = ("\n",)
    file: str | None = None
    domain_premise: str | None = None

    def __post_init__(self) -> None:
        template_fields(self.template, file=self.file, key="template")
        if template_fields(self.target, file=self.file, key="target") != ("label",):
            raise IclkitError("target must contain exactly one {label}", file=self.file, field="target")
        template_fields(self.instruction, file=self.file, key="instruction")
        if self.domain_premise is not None and not self.domain_premise.strip():
            raise IclkitError("must not be empty (leave it out to use the template's answer cue)", file=self.file,
                              field="domain_premise")

    @property
    def answer_cue(self) -> str:
        """The template's text after its last ``{field}``, leading whitespace removed: ``Sentiment:`` for
        ``Review: {text}`` + newline + ``Sentiment:``; empty when the template ends with a field."""
        parts = list(_FORMATTER.parse(self.template))
        tail = parts[-1][0] if parts and parts[-1][1] is None else ""
        return tail.lstrip()

    def premise(self) -> str:
        """What DC-PMI conditions the answers on: ``domain_premise`` if the file sets it, else ``answer_cue``."""
        return self.domain_premise if self.domain_premise is not None else self.answer_cue

    @property
    def hash(self) -> str:
        """Hash of everything that changes the rendered text."""
        return stable_hash({"template": self.template, "target": self.target, "separator": self.separator,
                            "instruction": self.instruction, "verbalizer": dict(self.verbalizer),
                            **({"domain_premise": self.domain_premise} if self.domain_premise is not None else {})})

    def word(self, label: str) -> str:
        return self.verbalizer.get(label, label)

    def check(self, inputs: Sequence[str], labels: Sequence[str]) -> None:
        """Fail early if the template needs a field the task lacks, or a label has no verbalizer entry."""
        for name in template_fields(self.template):
            if name not in inputs:
                raise IclkitError(f"template uses {{{name}}} but the task's inputs are {list(inputs)}",
                                  file=self.file, field="template")
        if self.verbalizer:
            missing = [x for x in labels if x not in self.verbalizer]
            if missing:
                raise IclkitError(f"labels {missing} are not in the verbalizer", file=self.file, field="verbalizer")

    def example(self, ex: Example) -> str:
        return fill(self.template, ex.fields)

    def answer(self, label: str) -> str:
        return fill(self.target, {"label": self.word(label)})

    def render(self, demos: Sequence[Example], query: Example, labels: Sequence[str] = ()) -> Rendered:
        """Pure and deterministic: the same demos, query and labels always give the same text."""
        parts = [self.example(d) + self.answer(d.label) for d in demos]
        prefix = self.instruction + "".join(p + self.separator for p in parts)
        return Rendered(
            prefix=prefix,
            context=self.example(query),
            continuations={label: self.answer(label) for label in labels},
            target=self.answer(query.label),
        )

    def render_chat(self, demos: Sequence[Example], query: Example, labels: Sequence[str],
                    apply_chat_template: Callable[[list[dict[str, str]]], str]) -> Rendered:
        """Chat form for instruct models: the prompt is one user turn, the answer the assistant's reply."""
        plain = self.render(demos, query, labels)
        marker = "\x00QUERY\x00"
        text = apply_chat_template([{"role": "user", "content": plain.prefix + marker}])
        head, _, tail = text.partition(marker)
        strip = {label: c.lstrip() for label, c in plain.continuations.items()}
        return Rendered(prefix=head, context=plain.context + tail, continuations=strip, target=plain.target.lstrip())


def parse_prompt(raw: Any, file: str) -> PromptTemplate:
    if not isinstance(raw, dict):
        raise IclkitError("a prompt file must hold a mapping", file=file)
    if not isinstance(raw.get("template"), str):
        raise IclkitError("missing or not text", file=file, field="template")
    verbalizer = raw.get("verbalizer") or {}
    if not isinstance(verbalizer, dict) or not all(isinstance(v, str) and v for v in verbalizer.values()):
        raise IclkitError("must map each label to a non-empty word", file=file, field="verbalizer")
    for key in ("target", "separator", "instruction", "domain_premise"):
        if key in raw and not isinstance(raw[key], str):
            raise IclkitError("must be text", file=file, field=key)
    stop = raw.get("stop", ["\n"])
    stop = stop if isinstance(stop, list) else [stop]
    if not all(isinstance(s, str) for s in stop):
        raise IclkitError("must be text or a list of texts (where generation stops)", file=file, field="stop")
    return PromptTemplate(
        name=str(raw.get("name", Path(file).stem)),
        template=raw["template"],
        target=raw.get("target", " {label}"),
        separator=raw.get("separator", "\n\n"),
        instruction=raw.get("instruction", ""),
        verbalizer={str(k): v for k, v in verbalizer.items()},
        stop=tuple(stop),
        file=file,
        domain_premise=raw.get("domain_premise"),
    )


def load_prompt(name_or_path: str | Path) -> PromptTemplate:
    """A prompt by registered name (``prompts/NAME.yaml``) or by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = shipped_dir("prompts") / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(p.stem for p in sorted(shipped_dir("prompts").glob("*.yaml")))
            raise IclkitError(f"unknown prompt {str(name_or_path)!r}", hint=f"registered prompts: {known}")
    return parse_prompt(read_yaml(path, "prompt file"), str(path))
