"""Scale-out: two real CPU processes (accelerate launch, gloo) give the records of a one-process run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys


from hypothesis import given
from hypothesis import strategies as st

from iclkit.runner.distributed import World, gather, merge_shards, shard

# three episodes over two processes: an uneven split (rank 0 runs two, rank 1 one)
RUN = ["run", "--task", "movie-sentiment", "--shots", "0,1,2", "--episodes", "1", "--n-query", "4",
       "--methods", "icl,knn", "--dtype", "float32", "--device", "cpu", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text(encoding="utf-8").splitlines()]


@given(items=st.lists(st.integers(), max_size=40), size=st.integers(1, 9))
def test_merging_every_rank_shard_gives_back_the_block(items, size):
    shards = [shard(items, World(rank, size)) for rank in range(size)]
    assert sorted(len(s) for s in shards)[-1] - sorted(len(s) for s in shards)[0] <= 1  # balanced
    assert sorted(x for s in shards for x in s) == sorted(items)  # every item on exactly one rank
    assert merge_shards(shards) == items
    assert gather([items, []], World()) == [items, []]


def test_two_processes_match_one(tmp_path, data_dir):
    # cwd=tmp_path: from the repository root, `python -m iclkit` would import the source tree, not the installation
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, "-m", "iclkit", *RUN, "--out", str(one)], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    assert launcher, "accelerate is a dependency of iclkit"
    # accelerate's --cpu mode starts one process per machine; its torchrun-based multi-process launcher (--multi_gpu)
    # starts two here, and iclkit's gloo process group needs no GPU.
    proc = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                           str(_free_port()), "-m", "iclkit", *RUN, "--out", str(two)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((two / "manifest.json").read_text())["processes"] == 2
    a, b = _records(one), _records(two)
    assert len({r["episode_id"] for r in a}) == 3 and len(a) == len(b)
    assert [r["episode_id"] for r in a] == [r["episode_id"] for r in b]
    assert [(r["query_id"], r["prediction"]) for r in a] == [(r["query_id"], r["prediction"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra["scores"].keys() == rb["scores"].keys()
        assert all(abs(ra["scores"][k] - rb["scores"][k]) < 1e-4 for k in ra["scores"])
