"""Test setup: offline hub, a real small model shared across tests, the benchmark data folder."""

from __future__ import annotations

import os
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def shared_data() -> Path | None:
    env = os.environ.get("ICLKIT_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return next((c for c in candidates if (c / "sst2").is_dir()), None)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data()
    if d is None:
        pytest.fail("benchmark data folder not found: set ICLKIT_DATA_DIR or place ../shared/data beside the repo")
    os.environ["ICLKIT_DATA_DIR"] = str(d)
    return d


@pytest.fixture(scope="session")
def smol():
    """The real embedded SmolLM2-135M-Instruct, fp32 on CPU (loaded once per test session)."""
    from iclkit.lm import ModelSpec, load_lm

    return load_lm(ModelSpec(dtype="float32", device="cpu", batch_size=16))
