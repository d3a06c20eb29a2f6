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

from src.errors import ConfigError, PipelineError, first_line
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
    """Call a ``from_pretrained`` loader on a project folder, or on a Hub name (cached in ``cache_dir``).

    A value that can only be a path (``./x``, ``data/x`` where ``data`` is a folder, more than
    one ``/``) and names no folder is reported as a missing folder, not as a Hub miss.
    """
    folder = resolve_path(name_or_path, root)
    if folder.is_dir():
        try:
            return load(str(folder), **kwargs)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"{key}: folder {display_path(folder, root)} holds nothing {load_what(load)} can load "
                f"({first_line(error)}); point {key} at a folder saved with save_pretrained"
            ) from None
    check_folder_exists(name_or_path, key=key, root=root)
    offline = not hub_is_reachable(timeout_s)
    if offline:
        use_offline_hub()
    try:
        return load(name_or_path, cache_dir=str(cache_dir), local_files_only=offline, **kwargs)
    except (OSError, ValueError) as error:
        if offline:
            raise PipelineError(
                f"{key}: the Hugging Face Hub ({hub_endpoint()}) is unreachable and {name_or_path!r} is not "
                f"cached in {display_path(cache_dir)}, nor a folder in the project; connect to the network "
                "or give a folder in the project"
            ) from None
        raise ConfigError(
            f"{key}: cannot load {name_or_path!r} (not a folder in the project either): {first_line(error)}"
        ) from None


def check_folder_exists(name_or_path: str, *, key: str, root: Path = PROJECT_ROOT) -> None:
    """Refuse a value that can only be a folder (see :func:`looks_like_path`) when there is none:
    cheap enough to run at start-up, before the loader is needed."""
    folder = resolve_path(name_or_path, root)
    if looks_like_path(name_or_path, root) and not folder.is_dir():
        raise ConfigError(
            f"{key}: folder {display_path(folder, root)} does not exist; fix the path (relative to the "
            "project root)"
        )


def looks_like_path(value: str, root: Path = PROJECT_ROOT) -> bool:
    """True for values that cannot be a Hub id (``name`` or ``owner/name``) but only a path."""
    if value.startswith((".", "/", "~")) or value.count("/") > 1:
        return True
    first = value.split("/")[0]
    return "/" in value and (root / first).is_dir()


def load_what(load: Callable[..., Any]) -> str:
    """``AutoTokenizer`` for ``AutoTokenizer.from_pretrained``: the loader's class, for messages."""
    owner = getattr(load, "__self__", None)
    return getattr(owner, "__name__", None) or getattr(load, "__qualname__", "the loader").split(".")[0]
