"""Reachability of the Hugging Face hub, checked once, fast, before anything tries to download."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

from .errors import CollapseBenchError

_TRUE = {"1", "true", "yes", "on"}


def offline_requested() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE)."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One TCP connect to the hub endpoint (``HF_ENDPOINT`` or huggingface.co:443); no retries."""
    if offline_requested():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def require_hub(what: str, offline_hint: str) -> None:
    """Raise a one-line error naming ``what`` could not be fetched and how to work offline."""
    if not hub_reachable():
        raise CollapseBenchError(f"cannot download {what}: the Hugging Face hub is unreachable (offline). {offline_hint}")
