"""Loading a task's rows from its source (benchmark data folder, local file, HF hub, built-in) into Examples."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterable, Mapping

from iclkit.errors import IclkitError
from iclkit.data.tasks import TaskData, TaskSpec
from iclkit.paths import data_dir
from iclkit.types import Example

Row = Mapping[str, Any]


class SourceUnavailable(Exception):
    """This source cannot be used here (missing folder, offline hub); the next listed source is tried."""


def _quiet_datasets() -> Any:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _file_format(path: Path, declared: str | None) -> str:
    fmt = declared or {".jsonl": "json", ".json": "json", ".csv": "csv"}.get(path.suffix.lower())
    if fmt not in ("json", "csv"):
        raise IclkitError("unsupported file type (use .jsonl or .csv)", file=str(path))
    return fmt


def _locate_json_error(path: Path) -> IclkitError | None:
    """Find the first malformed line of a JSONL file (only called after a load failed)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                return IclkitError(f"malformed JSON: {e.msg} (column {e.colno})", file=str(path), line=lineno)
            if not isinstance(obj, dict):
                return IclkitError("each line must be a JSON object", file=str(path), line=lineno)
    return None


def _line_of(path: Path, fmt: str, row: int) -> int:
    """1-based line of the ``row``-th record (JSONL skips blank lines; CSV has a header)."""
    if fmt == "csv":
        return row + 2
    seen = -1
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                seen += 1
                if seen == row:
                    return lineno
    return row + 1


def read_rows(path: Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """Rows of a local JSONL/CSV file, through the ``datasets`` json/csv builders."""
    if not path.is_file():
        raise IclkitError("no such file", file=str(path))
    fmt = _file_format(path, fmt)
    datasets = _quiet_datasets()
    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 - the builders raise many types; we re-diagnose below
        located = _locate_json_error(path) if fmt == "json" else None
        if located is not None:
            raise located from None
        raise IclkitError(f"cannot read {fmt.upper()} file: {type(e).__name__}: {e}".splitlines()[0],
                          file=str(path)) from None
    if ds.num_rows == 0:
        raise IclkitError("file has no rows", file=str(path))
    return list(ds)


def _row_example(row: Row, i: int, spec: TaskSpec, split: str, field_map: Mapping[str, str],
                 known: set[str], label_names: list[str] | None) -> Example:
    """One validated Example; raises _RowError(message, field) on bad input."""
    fields = {}
    for name in spec.inputs:
        src = field_map.get(name, name)
        if src not in row or row[src] is None:
            raise _RowError("missing field", src)
        value = row[src]
        if not isinstance(value, str):
            raise _RowError(f"expected text, got {type(value).__name__}", src)
        if not value.strip():
            raise _RowError("empty text", src)
        fields[name] = value
    lf = field_map.get("label", spec.label_field)
    if lf not in row or row[lf] is None:
        raise _RowError("missing field", lf)
    raw = row[lf]
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise _RowError(f"label must be a string or integer, got {type(raw).__name__}", lf)
    if label_names and isinstance(raw, int) and not 0 <= raw < len(label_names):
        raise _RowError(f"label index {raw} is out of range for {len(label_names)} class names", lf)
    label = label_names[raw] if (label_names and isinstance(raw, int)) else str(raw)
    if not label.strip():
        raise _RowError("empty label", lf)
    if known and label not in known:
        raise _RowError(f"label {label!r} is not one of the task's labels {sorted(known)}", lf)
    return Example(id=f"{split}-{i}", fields=fields, label=label)


class _RowError(Exception):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.message, self.field = message, field


def to_examples(rows: Iterable[Row], spec: TaskSpec, split: str, *, file: str | None = None,
                line_of: Any = None, field_map: Mapping[str, str] | None = None,
                label_names: list[str] | None = None) -> list[Example]:
    """Validate rows and build Examples; errors name the file, line and field (the line is found only on error)."""
    field_map = field_map or {}
    known = set(spec.labels)
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(_row_example(row, i, spec, split, field_map, known, label_names))
        except _RowError as e:
            raise IclkitError(e.message, file=file, line=line_of(i) if line_of else None, field=e.field) from None
    return out


def _holdout(examples: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """Deterministic stratified split of one file into (train, test)."""
    rng = random.Random("iclkit-holdout")
    by_label: dict[str, list[Example]] = {}
    for e in examples:
        by_label.setdefault(e.label, []).append(e)
    train, test = [], []
    for label in sorted(by_label):
        group = by_label[label]
        idx = list(range(len(group)))
        rng.shuffle(idx)
        n_test = int(round(fraction * len(group)))
        chosen = set(idx[:n_test])
        test += [group[i] for i in range(len(group)) if i in chosen]
        train += [group[i] for i in range(len(group)) if i not in chosen]
    return train, test


def _load_file(spec: TaskSpec, path: Path, split: str, fmt: str | None) -> list[Example]:
    rows = read_rows(path, fmt)
    resolved = _file_format(path, fmt)
    return to_examples(rows, spec, split, file=str(path), line_of=lambda i: _line_of(path, resolved, i),
                       field_map=None)


def _from_files(spec: TaskSpec, src: Mapping[str, Any], base: Path) -> TaskData:
    train_path = base / str(src["train"])
    train = _load_file(spec, train_path, "train", src.get("format"))
    if src.get("test"):
        test_path = base / str(src["test"])
        test = _load_file(spec, test_path, "test", src.get("format"))
        where = f"{train_path} + {test_path}"
    else:
        train, test = _holdout(train, float(src.get("holdout", 0.5)))
        where = f"{train_path} (held-out {src.get('holdout', 0.5)} for queries)"
    return TaskData(spec, tuple(train), tuple(test), where)


def _data_dir_source(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    root = data_dir()
    if root is None or not (root / str(src["dir"])).is_dir():
        raise SourceUnavailable(f"benchmark data folder {src['dir']!r} not found (set ICLKIT_DATA_DIR)")
    return _from_files(spec, src, root / str(src["dir"]))


def _local_source(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    base = Path(spec.file).parent if spec.file else Path.cwd()
    return _from_files(spec, src, base)


def _hub_source(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    from iclkit import hub

    ident = str(src["id"])
    if not hub.reachable():
        raise SourceUnavailable(f"hub dataset {ident!r} cannot be reached (offline)")
    datasets = _quiet_datasets()
    splits = {"train": src.get("train_split", "train"), "test": src.get("test_split", "test")}
    parts: dict[str, list[Example]] = {}
    for split, hub_split in splits.items():
        try:
            ds = datasets.load_dataset(ident, src.get("config"), split=hub_split,
                                       revision=src.get("revision"))
        except Exception as e:  # noqa: BLE001 - network and hub errors come in many types
            raise SourceUnavailable(f"hub dataset {ident!r} cannot be reached ({type(e).__name__})") from None
        feature = ds.features.get(src.get("fields", {}).get("label", spec.label_field))
        names = list(getattr(feature, "names", []) or []) or None
        parts[split] = to_examples(ds, spec, split, file=f"hf://datasets/{ident}",
                                   line_of=lambda i: i + 1, field_map=src.get("fields"), label_names=names)
    return TaskData(spec, tuple(parts["train"]), tuple(parts["test"]), f"hf://datasets/{ident}")


def _builtin_source(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    from iclkit.data import builtin

    return builtin.load(spec, src)


_LOADERS = {"data_dir": _data_dir_source, "local": _local_source, "hub": _hub_source, "builtin": _builtin_source}


def load_examples(spec: TaskSpec) -> TaskData:
    """Try the spec's sources in order; the first available one is used."""
    reasons = []
    for src in spec.sources:
        try:
            data = _LOADERS[src["kind"]](spec, src)
        except SourceUnavailable as e:
            reasons.append(str(e))
            continue
        if not data.train or not data.test:
            raise IclkitError("task needs both a train and a test part", file=spec.file)
        return data
    raise IclkitError(
        f"no source of task {spec.name!r} is available here: " + "; ".join(reasons),
        file=spec.file,
        hint="offline, use a local copy: set ICLKIT_DATA_DIR to the benchmark data folder, pass a .jsonl/.csv "
        "file as --task, or run `iclkit tasks` for the built-in offline tasks",
    )
