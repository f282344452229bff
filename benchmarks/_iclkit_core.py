"""Lets the benchmarks import iclkit's LM and ICL modules on a machine that lacks the rest of iclkit's dependencies.

The lent GPU image has torch, transformers and accelerate but not necessarily scikit-learn, scipy or matplotlib,
which ``import iclkit`` pulls in through the runner. The modules the benchmarks use need only torch, transformers
and PyYAML; if the full import fails, ``iclkit`` is registered as a bare package so those modules still load.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ensure_importable() -> None:
    """Import iclkit, or register it as a bare package whose submodules import on demand."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        import iclkit  # noqa: F401
    except ImportError as e:
        pkg = types.ModuleType("iclkit")
        pkg.__path__ = [str(REPO / "iclkit")]
        sys.modules["iclkit"] = pkg
        print(f"note: `import iclkit` failed ({e}); using its LM modules only", file=sys.stderr)
