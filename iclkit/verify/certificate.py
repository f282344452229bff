"""verify.json, the certificate ``iclkit verify`` writes into a run folder: its version, writing it (atomically),
reading it back, and the one line a leaderboard shows next to the run.

A certificate holds the sha256 of the files it verified (records.jsonl, episodes.jsonl, manifest.json); one whose
files have changed since is stale, and the leaderboard says so instead of showing it as verified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from iclkit.errors import IclkitError
from iclkit.files import file_sha256, write_json
from iclkit.results import read_run_json

VERIFY_VERSION = 1
FILE = "verify.json"
VERIFIED_FILES = ("records.jsonl", "episodes.jsonl", "manifest.json")


def fingerprint(folder: str | Path) -> dict[str, str]:
    """sha256 of each verified file of the run folder (those present)."""
    return {name: file_sha256(Path(folder) / name) for name in VERIFIED_FILES if (Path(folder) / name).is_file()}


def write_certificate(folder: str | Path, doc: Mapping[str, Any]) -> Path:
    """``folder``/verify.json, written through a temp file and a rename: never half a file."""
    return write_json(Path(folder) / FILE, dict(doc))


def read_certificate(folder: str | Path) -> dict[str, Any] | None:
    """The run folder's verify.json (None when it has none); a malformed one is an IclkitError naming it."""
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    doc = read_run_json(path)
    if not isinstance(doc, Mapping) or doc.get("version") != VERIFY_VERSION:
        found = doc.get("version") if isinstance(doc, Mapping) else None
        raise IclkitError(f"unsupported version {found} (this iclkit reads version {VERIFY_VERSION})",
                          file=str(path), field="version", hint="run `iclkit verify` on the run again")
    for key, kind in (("passed", bool), ("summary", Mapping)):
        if not isinstance(doc.get(key), kind):
            raise IclkitError("missing or malformed", file=str(path), field=key)
    return dict(doc)


def stale_files(folder: str | Path, doc: Mapping[str, Any]) -> list[str]:
    """The verified files that changed (or went missing) since ``doc`` was written."""
    now = fingerprint(folder)
    return [name for name, sha in (doc.get("files") or {}).items() if now.get(name) != sha]


def verified_text(doc: Mapping[str, Any] | None, stale: Sequence[str] = ()) -> str:
    """``verified: 4 settings, 128/128 identical, max |Δ| 3e-06``, ``NOT verified: ...`` or ``not verified``
    (no certificate, or a stale one: its files changed since). Counts are summed over the settings."""
    if doc is None:
        return "not verified"
    if stale:
        return f"not verified (verify.json is stale: {', '.join(stale)} changed since)"
    s = doc["summary"]
    n = int(s.get("settings_run", 0))
    parts = [f"{n} setting{'' if n == 1 else 's'}"] if n else []
    if s.get("compared"):
        parts.append(f"{s.get('identical')}/{s.get('compared')} identical")
        if s.get("max_abs_delta") is not None or s.get("max_rel_delta") is None:
            parts.append(f"max |Δ| {delta_text(s.get('max_abs_delta'))}")
        if s.get("max_rel_delta") is not None:
            parts.append(f"baselines max rel. Δ {delta_text(s.get('max_rel_delta'))}")
    if s.get("settings_skipped"):
        parts.append(f"skipped: {', '.join(s['settings_skipped'])}")
    if s.get("settings_failed_to_run"):
        parts.append(f"failed to run: {', '.join(s['settings_failed_to_run'])}")
    if not doc["passed"]:
        count = int(s.get("differences", 0))
        first = s.get("first_difference")
        parts.insert(0, f"{count} difference{'' if count == 1 else 's'}" + (f" (first: {first})" if first else ""))
    return ("verified: " if doc["passed"] else "NOT verified: ") + ", ".join(parts)


def delta_text(x: float | None) -> str:
    """A score difference in short: ``3e-06``, ``0``, or ``–`` when nothing was scored."""
    if x is None:
        return "–"
    return "0" if x == 0 else f"{x:.0e}"


def run_verification(folder: str | Path) -> dict[str, Any]:
    """What a leaderboard shows of a run folder's certificate: ``verified`` (the line) and ``verification`` (passed,
    stale, and the summary counts; None without a certificate)."""
    doc = read_certificate(folder)
    stale = stale_files(folder, doc) if doc is not None else []
    summary = None if doc is None else {"passed": bool(doc["passed"]) and not stale, "stale": bool(stale),
                                        **{k: doc["summary"].get(k) for k in ("settings_run", "compared", "identical",
                                                                              "max_abs_delta", "max_rel_delta")}}
    return {"verified": verified_text(doc, stale), "verification": summary}
