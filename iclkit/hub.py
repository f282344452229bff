"""Fast answers about the Hugging Face hub, so an unreachable hub id fails in seconds, not after retries."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse


def offline_by_env() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint accepts a TCP connection (checked once per process)."""
    if offline_by_env():
        return False
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except Exception:  # noqa: BLE001 - huggingface_hub moves its constants between versions
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False
