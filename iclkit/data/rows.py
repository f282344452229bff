"""Rows of a local JSONL/JSON/CSV file, each with the line it starts on, and their validation into Examples.

Files are read with the standard library, literally: a CSV value is the text written in the file (no type or
missing-value guessing), a JSON value is what ``json`` makes of it. Every error names the file, the line and, for a
bad value, the field.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping

from iclkit.data.spec import TaskSpec
from iclkit.errors import IclkitError
from iclkit.types import Example

Row = Mapping[str, Any]
FileFormat = Literal["json", "csv"]
_SUFFIXES: dict[str, FileFormat] = {".jsonl": "json", ".json": "json", ".csv": "csv"}


@dataclass(frozen=True)
class Record:
    """One row of a file and the (1-based) line it starts on."""

    line: int
    values: Mapping[str, Any]


def file_format(path: Path, declared: str | None = None) -> FileFormat:
    """``json`` (JSON lines; a ``.json`` file may instead hold one list of objects) or ``csv``: as declared in the
    task file, else from the file's suffix."""
    fmt = declared or _SUFFIXES.get(path.suffix.lower())
    if fmt not in ("json", "csv"):
        raise IclkitError("unsupported file type (use .jsonl or .csv)", file=str(path))
    return fmt  # type: ignore[return-value]


def read_text(path: Path) -> str:
    """The file's text; one clear error for a missing, binary (NUL bytes, invalid UTF-8) or empty file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IclkitError("no such file", file=str(path)) from None
    except OSError as e:
        raise IclkitError(f"cannot read file: {e.strerror}", file=str(path)) from None
    nul = data.find(b"\0")
    if nul >= 0:
        raise IclkitError(f"not a UTF-8 text file (a NUL byte at byte {nul})", file=str(path))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise IclkitError(f"not a UTF-8 text file (invalid UTF-8 at byte {e.start})", file=str(path)) from None
    if not text.strip():
        raise IclkitError("file is empty", file=str(path))
    return text


def _json_lines(text: str, file: str) -> Iterator[Record]:
    """One JSON object per line; blank lines skipped."""
    for lineno, line in enumerate(io.StringIO(text), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise IclkitError(f"malformed JSON: {e.msg} (column {e.colno})", file=file, line=lineno) from None
        except RecursionError:
            raise IclkitError("malformed JSON: nested too deeply", file=file, line=lineno) from None
        if not isinstance(obj, dict):
            raise IclkitError("each line must be a JSON object", file=file, line=lineno)
        yield Record(lineno, obj)


def _json_list(text: str, file: str) -> Iterator[Record]:
    """A ``.json`` file holding one list of objects."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise IclkitError(f"malformed JSON: {e.msg} (column {e.colno})", file=file, line=e.lineno) from None
    except RecursionError:
        raise IclkitError("malformed JSON: nested too deeply", file=file) from None
    # Each element's line: decode the elements one by one from where the previous one ended.
    decoder, pos = json.JSONDecoder(), text.index("[") + 1
    for item in items:
        while text[pos] in " \t\r\n,":
            pos += 1
        line = text.count("\n", 0, pos) + 1
        if not isinstance(item, dict):
            raise IclkitError("each element of the list must be a JSON object", file=file, line=line)
        pos = decoder.raw_decode(text, pos)[1]
        yield Record(line, item)


def _csv_records(text: str, file: str) -> Iterator[Record]:
    """A header line, then one row per record (quoted values may span lines); blank lines skipped."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    start = 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row:
                continue
            if header is None:
                header = row
                continue
            if len(row) != len(header):
                raise IclkitError(f"this row has {len(row)} values, the header {len(header)} (quote a value that "
                                  f"contains a comma)", file=file, line=line)
            yield Record(line, dict(zip(header, row)))
    except csv.Error as e:
        raise IclkitError(f"malformed CSV: {e}", file=file, line=start) from None


def read_rows(path: Path, fmt: str | None = None) -> Iterator[Record]:
    """Rows of a local JSONL/JSON/CSV file, each with its line, read one by one: a caller that checks each row as
    it comes reports the first bad line of the file, whether the format or a value is wrong."""
    resolved = file_format(path, fmt)
    if not path.is_file():
        raise IclkitError("no such file", file=str(path))
    text = read_text(path)
    n = 0
    if resolved == "csv":
        records = _csv_records(text, str(path))
    elif path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        records = _json_list(text, str(path))
    else:
        records = _json_lines(text, str(path))
    for n, record in enumerate(records, 1):
        yield record
    if n == 0:
        raise IclkitError("file has no rows" + (" (only a header line)" if resolved == "csv" else ""),
                          file=str(path))


def read_examples(path: Path, spec: TaskSpec, split: str, fmt: str | None = None) -> list[Example]:
    """A local file's rows as validated Examples (ids ``{split}-{i}``); the first bad line is the one named."""
    lines: list[int] = []

    def values() -> Iterator[Row]:
        for record in read_rows(path, fmt):
            lines.append(record.line)
            yield record.values

    return to_examples(values(), spec, split, file=str(path), line_of=lambda i: lines[i])


class _RowError(Exception):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.message, self.field = message, field


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


def to_examples(rows: Iterable[Row], spec: TaskSpec, split: str, *, file: str | None = None,
                line_of: Callable[[int], int] | None = None, field_map: Mapping[str, str] | None = None,
                label_names: list[str] | None = None) -> list[Example]:
    """Validate rows and build Examples (ids ``{split}-{i}``); errors name the file, line and field.

    ``line_of(i)`` maps the 0-based row index to the line named in an error; ``field_map`` maps the task's field
    names to the row's keys; ``label_names`` turns integer labels into class names.
    """
    field_map = field_map or {}
    known = set(spec.labels)
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(_row_example(row, i, spec, split, field_map, known, label_names))
        except _RowError as e:
            raise IclkitError(e.message, file=file, line=line_of(i) if line_of else None, field=e.field) from None
    return out
