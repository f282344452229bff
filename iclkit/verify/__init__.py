"""``iclkit verify RUN``: a reproducibility certificate for a run folder.

The data path, one module each: ``inputs`` reads the run and checks its episode hashes (the file's, the manifest's,
the records', and the episodes re-drawn from the task data) → ``sample`` draws a seeded sample of episodes and keeps
the learners that can be re-run without meta-training → ``settings`` lists what changes from the run (batch size,
torch threads, processes, no score cache) → ``rescore`` runs the sample again under one setting (``worker``: one
rank of the two-process setting) → ``compare`` matches every re-scored record with the one the run wrote →
``run.verify_run`` puts it together and ``certificate`` writes verify.json and the line a leaderboard shows.

Public names load on first use, so the leaderboard can read certificates without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"verify_run": "run", "Verification": "run", "SETTINGS": "settings", "VERIFY_VERSION": "certificate",
          "read_certificate": "certificate", "verified_text": "certificate"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'iclkit.verify' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
