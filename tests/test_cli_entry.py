"""The `iclkit` console command exits with `main`'s code, its objects frozen out of the collector's last sweep;
`main` itself, which tests and other callers run in their own process, leaves the collector as it found it."""

from __future__ import annotations

import gc
import subprocess
import sys

from iclkit.cli import main

# Runs the console command's entry point in a fresh process and reports, from an atexit handler (which runs after
# `entry` has called sys.exit), whether the collector's objects were frozen by then.
PROBE = """
import atexit, gc, sys
atexit.register(lambda: print(f"frozen={{gc.get_freeze_count() > 0}}", file=sys.stderr))
sys.argv = {argv!r}
from iclkit.cli import entry
entry()
"""


def _entry(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    # cwd=tmp_path: the installed package, as the console script would import it
    return subprocess.run([sys.executable, "-c", PROBE.format(argv=["iclkit", *argv])], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_main_leaves_the_collector_as_it_found_it(capsys):
    before = gc.get_freeze_count()
    assert main(["tasks"]) == 0
    assert "movie-sentiment" in capsys.readouterr().out
    assert gc.get_freeze_count() == before


def test_entry_exits_with_mains_code_after_freezing(tmp_path):
    ok = _entry(tmp_path, "tasks")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "movie-sentiment" in ok.stdout
    assert ok.stderr.strip().splitlines()[-1] == "frozen=True"
    bad = _entry(tmp_path)  # no command: the help, exit code 2
    assert bad.returncode == 2
    assert "usage: iclkit" in bad.stdout
    assert bad.stderr.strip().splitlines()[-1] == "frozen=True"
