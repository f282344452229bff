"""Test setup: offline hub, a real small model shared across tests, the benchmark data folder, and a guard that
fails any test which leaves process-wide state changed (torch threads, environment, logging levels, matplotlib
backend): such a test passes alone and breaks others in the full suite."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

if TYPE_CHECKING:
    from iclkit.lm.base import GenerationRequest, Loglikelihood, LoglikelihoodRequest

REPO = Path(__file__).resolve().parent.parent


def shared_data() -> Path | None:
    env = os.environ.get("ICLKIT_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return next((c for c in candidates if (c / "sst2").is_dir()), None)


if shared_data() is not None:  # set once, before any test, so no test changes the environment
    os.environ["ICLKIT_DATA_DIR"] = str(shared_data())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data()
    if d is None:
        pytest.fail("benchmark data folder not found: set ICLKIT_DATA_DIR or place ../shared/data beside the repo")
    return d


@pytest.fixture(scope="session")
def smol():
    """The real embedded SmolLM2-135M-Instruct, fp32 on CPU (loaded once per test session)."""
    from iclkit.lm import ModelSpec, load_lm

    return load_lm(ModelSpec(dtype="float32", device="cpu", batch_size=16))


class CountingLM:
    """The real model behind the LM protocol, keeping every log-likelihood request it is asked to score."""

    def __init__(self, lm: Any):
        self.lm = lm
        self.requests: list[LoglikelihoodRequest] = []

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        self.requests += list(requests)
        return self.lm.loglikelihood(requests)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return self.lm.generate(requests)

    def tokenize(self, text: str) -> list[int]:
        return self.lm.tokenize(text)

    def token_counts(self, requests: Sequence[LoglikelihoodRequest]) -> list[int]:
        return self.lm.token_counts(requests)

    @property
    def lead(self) -> Sequence[int]:
        return self.lm.lead

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        return self.lm.apply_chat_template(messages)

    def hidden_states(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self.lm.hidden_states(texts, **kwargs)

    @property
    def context_length(self) -> int:
        return self.lm.context_length

    @property
    def device(self) -> str:
        return self.lm.device

    def describe(self) -> Mapping[str, Any]:
        return self.lm.describe()


@pytest.fixture(scope="session")
def counting_lm() -> type:
    """``CountingLM``: wrap a model to see exactly which log-likelihood requests a run sends it."""
    return CountingLM


@pytest.fixture
def one_torch_thread():
    """torch on one thread for this test (faster, repeatable training), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Set by pytest itself, or by libraries on first import / first model load (scikit-learn, torch inductor): not a
# test's doing.
_NOT_LEAKS = ("PYTEST_CURRENT_TEST", "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK", "TORCHINDUCTOR_CACHE_DIR")


def _global_state() -> dict[str, object]:
    state: dict[str, object] = {"environ": {k: v for k, v in os.environ.items() if k not in _NOT_LEAKS}}
    if "torch" in sys.modules:
        state["torch threads"] = sys.modules["torch"].get_num_threads()
    if "matplotlib" in sys.modules:
        state["matplotlib backend"] = sys.modules["matplotlib"].get_backend()
    for name in ("transformers", "datasets", "evaluate"):
        if name in sys.modules:  # a library sets its own level when first imported: compare only after that
            state[f"logging level of {name!r}"] = logging.getLogger(name).level
    return state


@pytest.fixture(autouse=True)
def _no_leaked_global_state():
    before = _global_state()
    yield
    after = _global_state()
    changed = [k for k in before if k in after and before[k] != after[k]]
    if "environ" in changed:
        keys = {k for k in set(before["environ"]) | set(after["environ"])  # type: ignore[arg-type]
                if before["environ"].get(k) != after["environ"].get(k)}  # type: ignore[attr-defined]
        changed[changed.index("environ")] = f"environment variables {sorted(keys)}"
    assert not changed, f"the test changed process-wide state: {changed}"
