"""Resume: a real `iclkit run` killed with SIGKILL and started again writes the same files as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iclkit.runner.checkpoint import Checkpoint, config_key, partial_dir, result_from_dict, result_to_dict
from iclkit.cli import main
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.errors import IclkitError
from iclkit.runner.config import RunConfig
from iclkit.runner.execute import run_method
from iclkit.runner.pipeline import run
from iclkit.data.tasks import load_task
from iclkit.types import EpisodeResult, Example, Prediction

ARGS = ["run", "--task", "movie-sentiment", "--methods", "icl", "--shots", "0,1", "--episodes", "3", "--n-query", "2",
        "--no-progress",
        "--dtype", "float32", "--device", "cpu"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sigkilled_run_resumes_to_identical_files(tmp_path: Path) -> None:
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert main([*ARGS, "--out", str(reference)]) == 0
    progress = partial_dir(resumed) / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "iclkit", *ARGS, "--out", str(resumed)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and len(progress.read_bytes().splitlines()) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    code = proc.wait()
    assert code == -signal.SIGKILL, f"the run was not killed mid-run (exit {code}): {proc.stderr.read().decode()}"
    proc.stderr.close()
    assert not resumed.exists()
    done = len(progress.read_bytes().splitlines())
    assert 2 <= done < 6  # 3 episodes × 2 shot counts

    assert main([*ARGS, "--out", str(resumed)]) == 0
    assert _files(resumed) == _files(reference)
    assert not partial_dir(resumed).exists()
    records = [json.loads(x) for x in (resumed / "records.jsonl").read_text().splitlines()]
    keys = [(r["episode_id"], r["query_id"]) for r in records]
    assert len(keys) == len(set(keys)) == 6 * 2


@dataclass(frozen=True)
class FirstDemoLabel:
    """A tiny real learner: predicts the label of the first demonstration (or the first label at 0 shots)."""

    calls: list
    fail_at: int | None = None
    name: str = "first-demo"

    def describe(self) -> dict:
        return {"method": self.name}

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "FirstDemoLabel":
        self.calls.append(len(self.calls))
        if self.fail_at is not None and len(self.calls) > self.fail_at:
            raise KeyboardInterrupt  # stands in for the kill: nothing after this point is written
        guess = support[0].label if support else labels[0]
        scores = {lab: (0.0 if lab == guess else -1 / 3) for lab in labels}
        self.__dict__["_scores"] = scores
        return self

    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        scores = self.__dict__["_scores"]
        guess = max(scores, key=scores.get)
        return [Prediction(q.id, q.label, guess, q.label == guess, scores, {k: 0.1 + 0.2 for k in scores})
                for q in queries]


@pytest.fixture(scope="module")
def episodes() -> list:
    return sample_episodes(load_task("movie-sentiment"), EpisodeConfig(shots=(0, 1, 2), n_episodes=3, n_query=3))


def test_resume_computes_only_missing_episodes(tmp_path: Path, episodes: list) -> None:
    full = run_method(FirstDemoLabel([]), episodes, progress=False)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_method(FirstDemoLabel([], fail_at=4), episodes, progress=False, checkpoint=Checkpoint(out, "k"))
    calls: list = []
    again = run_method(FirstDemoLabel(calls), episodes, progress=False, checkpoint=Checkpoint(out, "k"))
    assert len(calls) == len(episodes) - 4
    assert again == full


def test_checkpoint_of_other_arguments_is_never_reused(tmp_path: Path, episodes: list) -> None:
    out = tmp_path / "out"
    run_method(FirstDemoLabel([]), episodes[:2], progress=False, checkpoint=Checkpoint(out, "config-a"))
    assert len(Checkpoint(out, "config-a").done) == 2
    assert Checkpoint(out, "config-b").done == {}
    assert not partial_dir(out).exists()
    a = config_key(RunConfig(tasks=("movie-sentiment",)).to_dict())
    b = config_key(RunConfig(tasks=("movie-sentiment",), episodes=EpisodeConfig(seed=1)).to_dict())
    assert a != b and a == config_key(RunConfig(tasks=("movie-sentiment",)).to_dict())


def test_torn_last_line_is_redone(tmp_path: Path, episodes: list) -> None:
    out = tmp_path / "out"
    run_method(FirstDemoLabel([]), episodes[:3], progress=False, checkpoint=Checkpoint(out, "k"))
    path = partial_dir(out) / "results.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the kill cut the third line short
    ckpt = Checkpoint(out, "k")
    assert len(ckpt.done) == 2
    calls: list = []
    again = run_method(FirstDemoLabel(calls), episodes[:3], progress=False, checkpoint=ckpt)
    assert len(calls) == 1 and again == run_method(FirstDemoLabel([]), episodes[:3], progress=False)
    assert len(Checkpoint(out, "k").done) == 3 and all(json.loads(x) for x in path.read_text().splitlines())


def test_bad_input_leaves_no_folder_behind(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for config in (RunConfig(tasks=("no-such-task",)),
                   RunConfig(tasks=("movie-sentiment",), episodes=EpisodeConfig(shots=(500,), n_episodes=1))):
        with pytest.raises(IclkitError):
            run(config, out, progress=False)
    assert sorted(os.listdir(tmp_path)) == []


floats = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=5), floats, min_size=1, max_size=4), floats,
       st.text(max_size=20))
def test_results_round_trip_exactly(scores: dict, mass: float, text: str) -> None:
    labels = tuple(scores)
    pred = Prediction("q\u00e9", labels[0], labels[-1], len(labels) == 1, scores, {k: abs(v) for k, v in scores.items()},
                      {"label_mass": mass, "generation": text})
    r = EpisodeResult("t/k1/e0", "abc", "t", "icl", 1, labels, (pred,), {"note": text})
    back = result_from_dict(json.loads(json.dumps(result_to_dict(r))))
    assert back == r
