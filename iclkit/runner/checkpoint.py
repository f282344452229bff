"""Resuming a killed run: finished episodes are appended (and fsynced) to a checkpoint beside the output folder.

``iclkit run --out DIR`` keeps ``.DIR.partial/`` next to DIR while it runs: ``meta.json`` holds the hash of the
run's configuration, ``results.jsonl`` one finished EpisodeResult per line. Started again with the same
configuration, the run reads it back and computes only the missing episodes; with another configuration the
checkpoint is discarded. ``usage.jsonl`` holds the LM work of each finished call (``iclkit.runner.usage``), so a
resumed run reports what the whole run asked of the model, not only what its last process did. Floats survive the JSON round trip exactly, so a resumed run writes byte-identical files.
The checkpoint is created at the first finished episode (bad input fails before that and leaves nothing behind)
and removed once the output folder is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from iclkit.files import atomic_write
from iclkit.types import Episode, EpisodeResult, Prediction, stable_hash

CHECKPOINT_VERSION = 1


def config_key(config: Mapping[str, Any]) -> str:
    """Hash of a run configuration (``RunConfig.to_dict()``): a checkpoint is reused only under the same key."""
    return stable_hash({"checkpoint": CHECKPOINT_VERSION, "config": config}, n=64)


def info_key(info: Mapping[str, Any]) -> str:
    """What tells apart two results of one method on one episode (e.g. under two prompts): a hash of ``info``."""
    return stable_hash(dict(info)) if info else ""


def result_to_dict(r: EpisodeResult) -> dict[str, Any]:
    """An EpisodeResult as JSON-able data (inverse of result_from_dict)."""
    return {"episode_id": r.episode_id, "episode_hash": r.episode_hash, "task": r.task, "method": r.method,
            "shots": r.shots, "labels": list(r.labels), "info": dict(r.info),
            "predictions": [{"query_id": p.query_id, "gold": p.gold, "predicted": p.predicted, "correct": p.correct,
                             "scores": dict(p.scores), "probs": dict(p.probs), "extra": dict(p.extra)}
                            for p in r.predictions]}


def result_from_dict(d: Mapping[str, Any]) -> EpisodeResult:
    """Rebuild an EpisodeResult written by result_to_dict."""
    preds = tuple(Prediction(query_id=p["query_id"], gold=p["gold"], predicted=p["predicted"], correct=p["correct"],
                             scores=p["scores"], probs=p["probs"], extra=p["extra"]) for p in d["predictions"])
    return EpisodeResult(episode_id=d["episode_id"], episode_hash=d["episode_hash"], task=d["task"],
                         method=d["method"], shots=d["shots"], labels=tuple(d["labels"]), predictions=preds,
                         info=d.get("info", {}))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partial_dir(out: str | Path) -> Path:
    """Where the checkpoint of output folder ``out`` lives."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def remove_checkpoint(out: str | Path) -> None:
    """Delete the checkpoint of output folder ``out`` (the folder is complete)."""
    shutil.rmtree(partial_dir(out), ignore_errors=True)


class Checkpoint:
    """Finished episode results of one run configuration, read back on restart."""

    def __init__(self, out: str | Path, key: str):
        self.dir = partial_dir(out)
        self.key = key
        self.done: dict[tuple[str, str, str], EpisodeResult] = {}
        self.usage: dict[tuple[str, tuple[str, ...]], Mapping[str, Any]] = {}  # (key, episode ids) → LM usage
        self._load()

    @property
    def results_path(self) -> Path:
        return self.dir / "results.jsonl"

    @property
    def usage_path(self) -> Path:
        return self.dir / "usage.jsonl"

    def _load(self) -> None:
        if not self.dir.exists():
            return
        try:
            meta = json.loads((self.dir / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        if meta.get("key") != self.key:  # another configuration (or a half-created folder): never reuse it
            shutil.rmtree(self.dir)
            return
        valid: list[str] = []
        if self.results_path.exists():
            with open(self.results_path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        r = result_from_dict(json.loads(line))
                    except (ValueError, KeyError, TypeError):
                        break  # a line cut short by the kill: it and anything after it are redone
                    self.done[(r.method, r.episode_id, info_key(r.info))] = r
                    valid.append(line if line.endswith("\n") else line + "\n")
            # rewrite without the torn tail, so appends start on a fresh line
            atomic_write(self.results_path, "".join(valid))
        if self.usage_path.exists():
            kept: list[str] = []
            with open(self.usage_path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        d = json.loads(line)
                        # a call redone after a kill writes its line again: the last one stands
                        self.usage[(str(d["key"]), tuple(d["episodes"]))] = dict(d["usage"])
                    except (ValueError, KeyError, TypeError):
                        break
                    kept.append(line if line.endswith("\n") else line + "\n")
            atomic_write(self.usage_path, "".join(kept))

    def get(self, method: str, episode: Episode, info: Mapping[str, Any] | None = None) -> EpisodeResult | None:
        """The stored result of ``method`` on ``episode`` (under ``info``: the prompt it ran with), if it was
        finished (and the episode is unchanged)."""
        r = self.done.get((method, episode.id, info_key(info or {})))
        return r if r is not None and r.episode_hash == episode.hash else None

    def _create(self) -> None:
        if not (self.dir / "meta.json").exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.dir / "meta.json", json.dumps({"version": CHECKPOINT_VERSION, "key": self.key}))
            _fsync_dir(self.dir)

    def _append_line(self, path: Path, data: Mapping[str, Any]) -> None:
        self._create()
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(data, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def append(self, result: EpisodeResult) -> None:
        """Record a finished episode durably (flush + fsync) before the run moves on."""
        self._append_line(self.results_path, result_to_dict(result))
        self.done[(result.method, result.episode_id, info_key(result.info))] = result

    def append_usage(self, key: str, episodes: Sequence[str], usage: Mapping[str, Any]) -> None:
        """Record the LM usage of one call that computed ``episodes`` (written before their results)."""
        self._append_line(self.usage_path, {"key": key, "episodes": list(episodes), "usage": dict(usage)})
        self.usage[(key, tuple(episodes))] = dict(usage)

    def restored_usage(self, key: str, restored: Collection[str]) -> list[Mapping[str, Any]]:
        """The usage of the calls under ``key`` whose episodes were all read back (``restored``): a call whose
        results were cut short by a kill is redone, and counted then."""
        return [u for (k, eps), u in self.usage.items() if k == key and set(eps) <= set(restored)]

    def remove(self) -> None:
        """Delete the checkpoint (the output folder is complete)."""
        shutil.rmtree(self.dir, ignore_errors=True)
