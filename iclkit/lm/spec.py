"""Which model to load and how: the one value every backend is loaded from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DType = Literal["auto", "float32", "bfloat16", "float16"]
Quantization = Literal["none", "8bit", "4bit"]
EMBEDDED = "smollm2-135m-instruct"
ALIASES = {"embedded": EMBEDDED, "default": EMBEDDED, EMBEDDED: EMBEDDED}


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how. ``name``: the embedded default, a .gguf path, a folder, or a hub id."""

    name: str = EMBEDDED
    revision: str | None = None
    dtype: DType = "auto"
    quantization: Quantization = "none"
    device: str = "auto"
    trust_remote_code: bool = False
    batch_size: int = 0  # rows per batch; 0 = automatic (16 on CPU; on CUDA 512, halved within a call on OOM)
    share_prefix: bool = True  # score an episode's demonstrations once (KV cache); False = one full pass per request
    backend: str = "hf"  # the registered backend that loads it (iclkit.lm.registry); last, so positions still hold
    context_length: int = 0  # treat the context window as this many tokens (0: the model's own; never more than it)
