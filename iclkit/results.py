"""A run folder read back as typed values: ``load_run(path)`` → ``SavedRun`` (records, episodes, summary, manifest).

``iclkit run --out DIR`` writes records.jsonl (one line per query), episodes.jsonl, summary.json and manifest.json;
this module turns them back into frozen dataclasses, so an analysis reads ``record.correct`` and ``row.ci_low``
instead of string keys, and ``run.records.to_pandas()`` / ``run.summary.to_pandas()`` give data frames. Fields a
record or row carries beyond the typed ones (a method's per-query extras such as ICL's ``label_mass``, its data
budget, a user's prompt fields) stay in ``extra``, so ``to_dict()`` gives back the line as written.

Every failure names the file, and where it can the line and the field, through ``IclkitError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

from iclkit.analysis.summary import SUMMARY_VERSION
from iclkit.episodes import read_episodes
from iclkit.errors import IclkitError
from iclkit.files import read_json_lines
from iclkit.types import Episode

if TYPE_CHECKING:
    import pandas

T = TypeVar("T")


@dataclass(frozen=True)
class Record:
    """One query as a method answered it: a line of records.jsonl. ``labels`` and ``permutation`` say which label
    probe and demonstration order it ran under (``gold`` and 0: the episode as drawn, the one the summary uses)."""

    task: str
    method: str
    shots: int
    episode_id: str
    episode_hash: str
    query_id: str
    gold: str
    prediction: str
    correct: bool
    scores: Mapping[str, float] = field(default_factory=dict)  # per-label score (ICL: log-likelihood)
    probs: Mapping[str, float] = field(default_factory=dict)
    prompt: str | None = None
    prompt_hash: str | None = None
    labels: str = "gold"
    permutation: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)  # every other field of the line, as written
    written_keys: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the file's keys, in its order

    def to_dict(self) -> dict[str, Any]:
        """The record as its JSON line has it: the same keys in the same order (for a Record built in code: the
        typed fields, without optional ones left at their defaults, then ``extra``)."""
        return _to_dict(self, optional={"scores": {}, "probs": {}, "prompt": None, "prompt_hash": None,
                                        "labels": "gold", "permutation": 0})


@dataclass(frozen=True)
class SummaryRow:
    """One (task, method, shots) cell of summary.json: accuracy with its 95% bootstrap CI over episodes, macro-F1,
    ECE; or, for a cell run under several prompts, one prompt's row (``prompt`` set, from summary.json "prompts")."""

    task: str
    method: str
    shots: int
    n_episodes: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    macro_f1: float | None
    n_queries: int | None = None
    ece: float | None = None
    meta_train: str | None = None  # the method's data budget: protocol …
    n_meta_texts: int | None = None  # … and labelled texts it meta-trained on outside the episodes
    prompt: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # spread across prompts, per-query means, budget lists
    written_keys: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the file's keys, in its order

    def to_dict(self) -> dict[str, Any]:
        """The row as summary.json has it."""
        return _to_dict(self, optional={"n_queries": None, "ece": None, "meta_train": None, "n_meta_texts": None,
                                        "prompt": None})


@dataclass(frozen=True)
class Manifest:
    """manifest.json: everything that moves a score — the run's options, package versions, the model, task
    sources, prompts (name, text hash), episode hashes and each method as built."""

    config: Mapping[str, Any]
    versions: Mapping[str, str]
    model: Mapping[str, Any] | None  # the LM as loaded (id, revision, weights hash, dtype); None: no LM was used
    tasks: Mapping[str, Any]
    prompts: Mapping[str, Any]
    episodes_hash: Mapping[str, str]
    methods: Mapping[str, Any]  # "task/method" → the learner as built (options, backbone, meta-training)
    seed: int | None
    extra: Mapping[str, Any] = field(default_factory=dict)  # budgets, meta-training plans, processes, …
    written_keys: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the file's keys, in its order

    def to_dict(self) -> dict[str, Any]:
        """The manifest as written."""
        return _to_dict(self, optional={})


class Records(tuple[Record, ...]):
    """A run's records (a tuple) with ``to_pandas()``."""

    def to_pandas(self) -> "pandas.DataFrame":
        """One row per query: the typed fields as columns (``scores``/``probs`` as dicts), then each extra field."""
        return _frame(self, Record)


class Summary(tuple[SummaryRow, ...]):
    """A run's summary rows (a tuple) with ``to_pandas()``."""

    def to_pandas(self) -> "pandas.DataFrame":
        """One row per (task, method, shots) cell: the typed fields as columns, then each extra field."""
        return _frame(self, SummaryRow)


@dataclass(frozen=True)
class SavedRun:
    """A run folder as ``load_run`` reads it."""

    path: Path
    records: Records
    episodes: tuple[Episode, ...]
    summary: Summary
    manifest: Manifest
    prompt_summary: Summary = Summary()  # per-prompt rows of cells run under several prompts


_HIDDEN = ("extra", "written_keys")  # not columns of their own


def _to_dict(value: Any, optional: Mapping[str, Any]) -> dict[str, Any]:
    typed = {f.name: getattr(value, f.name) for f in fields(value) if f.name not in _HIDDEN}
    merged = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in {**typed, **value.extra}.items()}
    if value.written_keys:
        return {k: merged[k] for k in value.written_keys}
    return {k: v for k, v in merged.items() if not (k in optional and v == optional[k])}


def _frame(values: tuple[Any, ...], kind: type) -> "pandas.DataFrame":
    import pandas  # installed with datasets; imported only when a frame is asked for

    typed = [f.name for f in fields(kind) if f.name not in _HIDDEN]
    rows = [{**{name: getattr(v, name) for name in typed}, **v.extra} for v in values]
    return pandas.DataFrame(rows, columns=list(dict.fromkeys([*typed, *(k for r in rows for k in r)])))


_INT, _FLOAT, _STR, _BOOL = "an integer", "a number", "a string", "true or false"
_CHECKS: dict[str, Callable[[Any], bool]] = {
    _INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
    _FLOAT: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    _STR: lambda v: isinstance(v, str), _BOOL: lambda v: isinstance(v, bool),
    "an object": lambda v: isinstance(v, Mapping),
}
_RECORD = {"task": _STR, "method": _STR, "shots": _INT, "episode_id": _STR, "episode_hash": _STR, "query_id": _STR,
           "gold": _STR, "prediction": _STR, "correct": _BOOL}
_RECORD_OPTIONAL = {"scores": "an object", "probs": "an object", "prompt": _STR, "prompt_hash": _STR,
                    "labels": _STR, "permutation": _INT}
_ROW = {"task": _STR, "method": _STR, "shots": _INT, "n_episodes": _INT}
_ROW_OPTIONAL = {"accuracy": _FLOAT, "ci_low": _FLOAT, "ci_high": _FLOAT, "macro_f1": _FLOAT, "n_queries": _INT,
                 "ece": _FLOAT, "meta_train": _STR, "n_meta_texts": _INT, "prompt": _STR}
_MANIFEST_OPTIONAL = {"config": "an object", "versions": "an object", "model": "an object", "tasks": "an object",
                      "prompts": "an object", "episodes_hash": "an object", "methods": "an object", "seed": _INT}


def _typed(kind: Callable[..., T], d: Any, required: Mapping[str, str], optional: Mapping[str, str],
           file: Path, line: int | None, where: str = "") -> T:
    """``kind`` built from the dict ``d``: the required and optional keys checked by type, the rest as ``extra``.
    ``where`` prefixes the field an error names (``results[3].``: the fourth row of summary.json's results)."""
    if not isinstance(d, Mapping):
        raise IclkitError("expected a JSON object", file=str(file), line=line, field=where.rstrip(".") or None)
    for name, want in {**required, **optional}.items():
        if name not in d:
            if name in required:
                raise IclkitError("missing field", file=str(file), line=line, field=where + name)
        elif not (d[name] is None and name in optional) and not _CHECKS[want](d[name]):
            raise IclkitError(f"expected {want}, got {json.dumps(d[name])[:60]}", file=str(file), line=line,
                              field=where + name)
    known = {**required, **optional}
    return kind(**{k: v for k, v in d.items() if k in known}, extra={k: v for k, v in d.items() if k not in known},
                written_keys=tuple(d))


def read_run_json(path: Path, hint: str = "pass a folder written by `iclkit run --out DIR`") -> Any:
    """One JSON file of a run folder; a missing, unreadable or malformed file is an IclkitError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IclkitError("missing file: not an iclkit run folder?", file=str(path), hint=hint) from None
    except OSError as e:
        raise IclkitError(f"cannot read: {e.strerror}", file=str(path)) from None
    except json.JSONDecodeError as e:
        raise IclkitError(f"malformed JSON: {e.msg}", file=str(path), line=e.lineno) from None


def read_records(path: str | Path) -> Records:
    """records.jsonl as ``Record`` values; a bad line is an IclkitError naming its line and field."""
    path = Path(path)
    out = [_typed(Record, d, _RECORD, _RECORD_OPTIONAL, path, lineno)
           for lineno, d in read_json_lines(path, missing="missing file: not an iclkit run folder?")]
    return Records(out)


def load_run(path: str | Path) -> SavedRun:
    """Read the run folder ``path`` (written by ``iclkit run --out``) as typed values."""
    folder = Path(path)
    if not folder.is_dir():
        raise IclkitError("no such run folder", file=str(folder), hint="pass a folder written by `iclkit run --out`")
    summary_file, manifest_file = folder / "summary.json", folder / "manifest.json"
    summary = read_run_json(summary_file)
    if not isinstance(summary, Mapping) or summary.get("version") != SUMMARY_VERSION:
        found = summary.get("version") if isinstance(summary, Mapping) else None
        raise IclkitError(f"unsupported summary version {found} (this iclkit reads version {SUMMARY_VERSION})",
                          file=str(summary_file), field="version")

    def rows(key: str) -> Summary:
        entries = summary.get(key, [])
        if not isinstance(entries, list):
            raise IclkitError("expected a list of rows", file=str(summary_file), field=key)
        return Summary(_typed(SummaryRow, r, _ROW, _ROW_OPTIONAL, summary_file, None, f"{key}[{i}].")
                       for i, r in enumerate(entries))

    manifest = _typed(_manifest, read_run_json(manifest_file), {}, _MANIFEST_OPTIONAL, manifest_file, None)
    if not (folder / "episodes.jsonl").is_file():
        raise IclkitError("missing file: not an iclkit run folder?", file=str(folder / "episodes.jsonl"))
    return SavedRun(path=folder, records=read_records(folder / "records.jsonl"),
                    episodes=tuple(read_episodes(folder / "episodes.jsonl")), summary=rows("results"),
                    manifest=manifest, prompt_summary=rows("prompts"))


def _manifest(*, extra: Mapping[str, Any], written_keys: tuple[str, ...], **given: Any) -> Manifest:
    """A Manifest from manifest.json's keys; a run folder written before a key existed reads it as empty."""
    empty: dict[str, Any] = {"config": {}, "versions": {}, "model": None, "tasks": {}, "prompts": {},
                             "episodes_hash": {}, "methods": {}, "seed": None}
    return Manifest(**{**empty, **given}, extra=extra, written_keys=written_keys)
