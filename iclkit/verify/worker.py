"""One rank of ``iclkit verify``'s two-process setting: ``torchrun ... -m iclkit.verify.worker SPEC``.

SPEC (written by ``iclkit.verify.rescore.rescore_in_processes``) holds the run's configuration, the sample and the
batch size; every rank plans the run, cuts it to the sample and re-scores its shard; rank 0 writes the gathered
records to the file SPEC names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from iclkit.files import write_json
from iclkit.runner import distributed
from iclkit.runner.config import RunConfig
from iclkit.runner.plan import plan
from iclkit.verify.rescore import rescore, with_model
from iclkit.verify.sample import Sample, restrict


def main(argv: Sequence[str] | None = None) -> int:
    """Re-score this rank's share of the sample SPEC names."""
    (spec_file,) = list(sys.argv[1:] if argv is None else argv)
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    s = spec["sample"]
    sample = Sample(int(s["seed"]), 0, {task: tuple(ids) for task, ids in s["episodes"].items()})
    planned = with_model(restrict(plan(RunConfig.from_dict(spec["config"])), sample), int(spec["batch_size"]))
    result = rescore(planned)
    if distributed.world().main:
        write_json(spec["out"], result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
