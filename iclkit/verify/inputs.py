"""A run folder as verification reads it, and the checks of its episode hashes.

Unlike ``iclkit.results.load_run``, an episode whose stored hash no longer matches its content is read (with the
hash it should have) and reported as a difference rather than refused: an edited episodes.jsonl is a run that no
longer verifies (exit 1), not bad input. Files that cannot be parsed at all are bad input (``IclkitError``, exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from iclkit.errors import IclkitError
from iclkit.files import read_json_lines
from iclkit.results import Record, read_records, read_run_json
from iclkit.runner.config import RunConfig
from iclkit.types import Episode, episodes_hash
from iclkit.verify.difference import Difference

_HINT = "pass a folder written by `iclkit run --out DIR`"


@dataclass(frozen=True)
class RunFolder:
    """What verification needs of a run folder: its manifest, rebuilt configuration, records and episodes (each
    with the hash recomputed from its content; ``stored_hashes`` are those the file gives, line by line)."""

    path: Path
    manifest: Mapping[str, Any]
    config: RunConfig
    records: tuple[Record, ...]
    episodes: tuple[Episode, ...]
    stored_hashes: tuple[str | None, ...]
    episode_lines: tuple[int, ...]  # line of each episode in episodes.jsonl


def read_folder(path: str | Path) -> RunFolder:
    """Read ``path`` for verification; anything missing or malformed is an IclkitError naming file, line, field."""
    folder = Path(path)
    if not folder.is_dir():
        raise IclkitError("no such run folder", file=str(folder), hint=_HINT)
    for name in ("manifest.json", "records.jsonl", "episodes.jsonl"):
        if not (folder / name).is_file():
            raise IclkitError("missing file: not an iclkit run folder?", file=str(folder / name), hint=_HINT)
    manifest_file = folder / "manifest.json"
    manifest = read_run_json(manifest_file, _HINT)
    if not isinstance(manifest, Mapping):
        raise IclkitError("expected a JSON object", file=str(manifest_file))
    for key in ("config", "episodes_hash"):
        if not isinstance(manifest.get(key), Mapping):
            raise IclkitError("missing or not an object (a run written by an older iclkit cannot be verified)",
                              file=str(manifest_file), field=key)
    try:
        config = RunConfig.from_dict(manifest["config"], file=str(manifest_file))
    except IclkitError as e:  # an option's own check names no file: this one is the manifest's config
        raise IclkitError(e.message, file=e.file or str(manifest_file), line=e.line,
                          field=e.field if e.file else f"config.{e.field}" if e.field else "config",
                          hint=e.hint) from None
    episodes, stored, lines = _read_episodes(folder / "episodes.jsonl")
    return RunFolder(folder, manifest, config, tuple(read_records(folder / "records.jsonl")), episodes, stored, lines)


def _read_episodes(path: Path) -> tuple[tuple[Episode, ...], tuple[str | None, ...], tuple[int, ...]]:
    episodes: list[Episode] = []
    stored: list[str | None] = []
    lines: list[int] = []
    for lineno, d in read_json_lines(path):
        try:
            episodes.append(Episode.from_dict({k: v for k, v in d.items() if k != "hash"}))
        except KeyError as e:
            raise IclkitError("missing field", file=str(path), line=lineno, field=str(e).strip("'")) from None
        except (TypeError, ValueError, AttributeError) as e:
            raise IclkitError(f"malformed episode: {e}", file=str(path), line=lineno) from None
        stored.append(d.get("hash") if isinstance(d.get("hash"), str) else None)
        lines.append(lineno)
    return tuple(episodes), tuple(stored), tuple(lines)


def by_task(episodes: Sequence[Episode]) -> dict[str, list[Episode]]:
    """Episodes grouped by task, each group in file order."""
    out: dict[str, list[Episode]] = {}
    for e in episodes:
        out.setdefault(e.task, []).append(e)
    return out


def hash_differences(run: RunFolder, redrawn: Mapping[str, Sequence[Episode]]) -> list[Difference]:
    """Every episode hash that no longer matches: a line's stored hash against its content, each task's hash in the
    manifest against the file's episodes, the episodes re-drawn from the task data (``redrawn``, the plan's)
    against the file's, and each record's ``episode_hash`` (episodes as drawn: gold labels, drawn order) against
    its episode's."""
    out: list[Difference] = []
    for ep, stored, line in zip(run.episodes, run.stored_hashes, run.episode_lines):
        if stored != ep.hash:
            out.append(Difference("hash", stored, ep.hash, task=ep.task, episode_id=ep.id, file="episodes.jsonl",
                                  line=line))
    mine = by_task(run.episodes)
    recorded = dict(run.manifest["episodes_hash"])
    for task in dict.fromkeys([*recorded, *mine, *redrawn]):
        file_hash = episodes_hash(mine.get(task, []))
        if recorded.get(task) != file_hash:
            out.append(Difference("episodes_hash", recorded.get(task), file_hash, task=task, file="manifest.json"))
        again = list(redrawn.get(task, []))
        if episodes_hash(again) != file_hash:
            out.append(_first_redraw_difference(task, mine.get(task, []), again))
    known = {e.id: e.hash for e in run.episodes}
    for i, r in enumerate(run.records, 1):
        if r.labels != "gold" or r.permutation != 0:
            continue  # a probe's or another order's record carries its perturbed episode's hash, compared on re-score
        if known.get(r.episode_id) != r.episode_hash:
            out.append(Difference("episode_hash", r.episode_hash, known.get(r.episode_id), task=r.task,
                                  method=r.method, episode_id=r.episode_id, query_id=r.query_id,
                                  file="records.jsonl", line=i))
    return out


def _first_redraw_difference(task: str, mine: Sequence[Episode], again: Sequence[Episode]) -> Difference:
    """The first episode where the file and a fresh draw from the task data part."""
    for a, b in zip(mine, again):
        if a.hash != b.hash:
            return Difference("episode re-drawn from the task data", a.hash, b.hash, task=task, episode_id=a.id,
                              file="episodes.jsonl")
    return Difference("episodes re-drawn from the task data", f"{len(mine)} episodes", f"{len(again)} episodes",
                      task=task, file="episodes.jsonl")


def hash_table(run: RunFolder, redrawn: Mapping[str, Sequence[Episode]]) -> dict[str, dict[str, str | None]]:
    """Per task, the episodes hash the manifest records, the file's and a fresh draw's (verify.json shows all)."""
    mine = by_task(run.episodes)
    recorded = dict(run.manifest["episodes_hash"])
    return {task: {"manifest": recorded.get(task), "file": episodes_hash(mine.get(task, [])),
                   "redrawn": episodes_hash(list(redrawn.get(task, [])))}
            for task in dict.fromkeys([*recorded, *mine, *redrawn])}
