"""The Hugging Face Hub, when it is there: probe it once, fail fast and clearly when it is not.

Without a probe, an offline machine spends a minute in retries before the
libraries give up. Here a TCP connection is tried for a few seconds; when it
fails, the libraries are switched to their caches and a missing file becomes
one line that says what to do.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from src.errors import ConfigError, PipelineError
from src.paths import PROJECT_ROOT, display_path, resolve_path

T = TypeVar("T")


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_is_reachable(timeout_s: float) -> bool:
    """Can a TCP connection to the Hub be opened within ``timeout_s``? Never retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return False
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def use_offline_hub() -> None:
    """Make ``datasets`` and ``huggingface_hub`` use their caches only, for this process."""
    import datasets.config
    import huggingface_hub.constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    datasets.config.HF_HUB_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def from_folder_or_hub(
    load: Callable[..., T],
    name_or_path: str,
    *,
    key: str,
    cache_dir: Path,
    timeout_s: float,
    root: Path = PROJECT_ROOT,
    **kwargs: Any,
) -> T:
    """Call a ``from_pretrained`` loader on a project folder, or on a Hub name (cached in ``cache_dir``)."""
    folder = resolve_path(name_or_path, root)
    if folder.is_dir():
        return load(str(folder), **kwargs)
    offline = not hub_is_reachable(timeout_s)
    if offline:
        use_offline_hub()
    try:
        return load(name_or_path, cache_dir=str(cache_dir), local_files_only=offline, **kwargs)
    except OSError as error:
        if offline:
            raise PipelineError(
                f"{key}: the Hugging Face Hub ({hub_endpoint()}) is unreachable and {name_or_path!r} is not "
                f"cached in {display_path(cache_dir)}; connect to the network or give a folder in the project"
            ) from None
        raise ConfigError(
            f"{key}: cannot load {name_or_path!r}: {str(error).strip().splitlines()[0]}"
        ) from None
