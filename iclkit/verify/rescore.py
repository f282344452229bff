"""Re-scoring a verification sample under one setting: in this process (``rescore``), or sharded over several as
``torchrun`` shards a run (``rescore_in_processes``, which starts ``iclkit.verify.worker`` on each rank).

The loop is the runner's own (``build_learners`` and ``run_method`` of ``iclkit.runner.execute``), with a fresh model
handle (no score cache) and a fresh embedding folder, so every score and vector is computed again; results come out
as the records the run wrote (``iclkit.analysis.summary.records``), to be compared field by field.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from iclkit import learners
from iclkit.analysis.summary import records
from iclkit.embeddings import EmbeddingCaches
from iclkit.files import write_json
from iclkit.runner import distributed
from iclkit.runner.execute import TrainSets, build_learners, meta_trains, metered, run_method
from iclkit.runner.model import ModelHandle
from iclkit.runner.plan import RunPlan
from iclkit.runner.usage import Meter
from iclkit.verify.sample import META_TRAINS, Sample


class WorkerFailed(Exception):
    """The processes of ``rescore_in_processes`` did not finish; the message ends with their last output."""


@dataclass(frozen=True)
class Rescored:
    """Records of one re-score, in the run's order; methods left out because their learner turned out to meta-train
    (``skipped``, with why); the model as used (device, rows per batch; None when no method used it)."""

    records: tuple[Mapping[str, Any], ...]
    skipped: Mapping[str, str]
    lm: Mapping[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (what a worker hands back)."""
        return {"records": list(self.records), "skipped": dict(self.skipped), "lm": self.lm}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Rescored":
        """Inverse of ``to_dict``."""
        return cls(tuple(d["records"]), dict(d["skipped"]), d["lm"])


def with_model(plan: RunPlan, batch_size: int) -> RunPlan:
    """``plan`` with a model handle of its own, without score cache, scoring ``batch_size`` rows per batch."""
    return replace(plan, model=ModelHandle(replace(plan.config.model, batch_size=batch_size)))


def with_batch_size(plan: RunPlan, loaded: ModelHandle, batch_size: int) -> RunPlan:
    """``plan`` scoring ``batch_size`` rows per batch. A backend that keeps its batch size in a ``batch_size``
    attribute (read at each call, as the hf backend does) is shared with ``loaded``, already loaded: a shallow copy
    of it with another batch size, the weights not loaded twice; any other model is loaded again."""
    if not (loaded.loaded and hasattr(loaded.backend, "batch_size")):
        return with_model(plan, batch_size)
    handle = ModelHandle(replace(plan.config.model, batch_size=batch_size))
    handle.backend = handle.lm = copy.copy(loaded.backend)
    handle.backend.batch_size = batch_size
    if hasattr(handle.backend, "decode_rows"):  # the hf backend's rows per decoding step, set with its batch size
        handle.backend.decode_rows = batch_size
    return replace(plan, model=handle)


def rescore(plan: RunPlan) -> Rescored:
    """Every job of ``plan`` run again, this process's share of each when under ``torchrun`` (all gathered back)."""
    world = distributed.init()
    with tempfile.TemporaryDirectory(prefix="iclkit-verify-") as root:
        built = build_learners(plan, metered(plan, Meter()), TrainSets(plan), progress=False,
                               embeddings=EmbeddingCaches(root))
        blocks, skipped = [], {}
        for index, (lp, learner) in enumerate(zip(plan.learners, built)):
            if meta_trains(lp, learner):  # undeclared meta-learner: same decision on every rank and setting
                skipped.update({name: META_TRAINS for name in lp.outputs or (lp.method,)})
                continue
            per_call = learner.episodes_per_call() if learners.entry(lp.method).capabilities.batches_episodes else 1
            for job in (j for j in plan.jobs if j.learner == index):
                blocks.append(run_method(learner, distributed.shard(job.episodes, world), progress=False,
                                         per_call=per_call, outputs=lp.outputs, info=job.info))
        results = [r for block in distributed.gather(blocks, world) for r in block]
    return Rescored(tuple(rec for r in results for rec in records(r)), skipped, _lm_used(plan.model))


def _lm_used(handle: ModelHandle) -> dict[str, Any] | None:
    if not handle.loaded:
        return None
    return {"device": str(handle.lm.device), "batch_size": getattr(handle.backend, "batch_size", None)}


def rescore_in_processes(config: Mapping[str, Any], sample: Sample, batch_size: int, processes: int = 2) -> Rescored:
    """The sample re-scored by ``processes`` processes under ``torchrun`` (one torch thread each), each planning the
    run from ``config`` (``RunConfig.to_dict``'s) and running its shard; rank 0 hands the gathered records back."""
    with tempfile.TemporaryDirectory(prefix="iclkit-verify-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "rescored.json"
        write_json(spec, {"config": dict(config), "sample": sample.to_dict(), "batch_size": batch_size,
                          "out": str(out)})
        # PYTHONSAFEPATH: `-m` would otherwise put the working folder first on the workers' sys.path, and from a
        # source checkout beside a non-editable install they would import that tree's iclkit, which lacks
        # iclkit.baselines (baselines/ is mapped in only by installing).
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONSAFEPATH": "1"}
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                               "--nproc-per-node", str(processes), "-m", "iclkit.verify.worker", str(spec)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            tail = " | ".join(line for line in (proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise WorkerFailed(f"{processes} processes exited with code {proc.returncode}: {tail}")
        return Rescored.from_dict(json.loads(out.read_text(encoding="utf-8")))
