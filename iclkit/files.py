"""File helpers used everywhere: atomic writes, all-or-nothing folders, sha256 of a file, YAML and JSON-lines reading.

Every file iclkit writes goes through ``atomic_write``: a temp file in the same folder renamed into place, so a
reader (or a killed run) never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml

from iclkit.errors import IclkitError


def atomic_write(path: str | Path, data: str | bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` through a temp file and a rename; readable by others (``mode``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp's 0600 would make a shared file unreadable to others
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Indented JSON, written atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """One JSON object per line, written atomically."""
    return atomic_write(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


@contextmanager
def staged_dir(out: str | Path) -> Iterator[Path]:
    """Build a folder beside ``out`` and move it into place only when everything in the block succeeded."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json_lines(path: str | Path, *, missing: str = "missing file") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines file iclkit wrote (run records, episodes).
    A missing or unreadable file, a malformed line or one that is not an object is an IclkitError naming the file and
    the line; ``missing`` is the message for a file that is not there."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IclkitError(missing, file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise IclkitError(f"cannot read: {getattr(e, 'strerror', None) or e}", file=str(path)) from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise IclkitError(f"malformed JSON: {e.msg} (column {e.colno})", file=str(path), line=lineno) from None
        if not isinstance(obj, dict):
            raise IclkitError("each line must be a JSON object", file=str(path), line=lineno)
        yield lineno, obj


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file with ``yaml.safe_load`` (data only); errors name the file and the line."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise IclkitError(f"cannot read {what}: {e.strerror}", file=str(path)) from None
    except UnicodeDecodeError:
        raise IclkitError(f"cannot read {what}: not UTF-8 text", file=str(path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise IclkitError(f"invalid YAML: {getattr(e, 'problem', None) or e}", file=str(path),
                          line=mark.line + 1 if mark else None) from None
