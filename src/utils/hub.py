"""The Hugging Face Hub, when it is there: probe it once, fail fast and clearly when it is not.

Without a probe, an offline machine spends a minute in retries before the
libraries give up. Here a TCP connection is tried for a few seconds; when it
fails, the libraries are switched to their caches and a missing file becomes
one line that says what to do.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from src.errors import ConfigError, PipelineError, first_line
from src.paths import PROJECT_ROOT, display_path, resolve_path

T = TypeVar("T")

#: The files whose ``auto_map`` makes a ``transformers`` loader import Python code shipped with a folder
#: (``AutoConfig`` and ``AutoModel*`` read ``config.json``; ``AutoTokenizer`` both).
CODE_MAPS = ("config.json", "tokenizer_config.json")

#: The one switch for all of it, named in every refusal.
TRUST_KEY = "model.trust_remote_code"


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
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> T:
    """Call a ``from_pretrained`` loader on a project folder, or on a Hub name (cached in ``cache_dir``).

    A value that can only be a path (``./x``, ``data/x`` where ``data`` is a folder, more than
    one ``/``) and names no folder is reported as a missing folder, not as a Hub miss.

    ``trust_remote_code`` (``model.trust_remote_code``) is handed to the loader as the bool it is.
    Without it, a folder that ships code for the loader to import (see :func:`custom_code`) is
    refused before anything is loaded, and so is a Hub repository that cannot load without its code
    (transformers refuses it; one whose code has a built-in equivalent loads that, running nothing).
    """
    folder = resolve_path(name_or_path, root)
    kwargs["trust_remote_code"] = trust_remote_code  # always a bool: transformers never asks on the terminal
    if folder.is_dir():
        refuse_custom_code(folder, key=key, trust_remote_code=trust_remote_code, root=root)
        try:
            return load(str(folder), **kwargs)
        except (OSError, ValueError) as error:
            if not trust_remote_code and _asks_for_trust(error):
                raise _untrusted(f"{key}: folder {display_path(folder, root)}", "custom code") from None
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
        if not trust_remote_code and _asks_for_trust(error):
            raise _untrusted(f"{key}: {name_or_path!r}", "custom code") from None
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


def custom_code(folder: Path) -> list[str]:
    """The Python classes ``folder`` declares for the loaders to import (its files' ``auto_map``), as
    ``tokenizer_config.json: tokenization_x.XTokenizer``; empty when it ships no code to run."""
    found: list[str] = []
    for name in CODE_MAPS:
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing or unreadable: the loader has its own complaint
            continue
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        if not auto_map:
            continue
        entries = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
        refs = [ref for entry in entries for ref in (entry if isinstance(entry, list) else [entry]) if ref]
        found += [f"{name}: {ref}" for ref in dict.fromkeys(map(str, refs))] or [f"{name}: auto_map"]
    return found


def refuse_custom_code(
    folder: Path, *, key: str | None, trust_remote_code: bool, root: Path = PROJECT_ROOT
) -> None:
    """Refuse, unless ``model.trust_remote_code`` is on, a folder whose loading would run its own code.

    ``key``: the setting that names the folder (``tokenize.tokenizer``), or None for a folder the
    pipeline wrote (named by its path alone).
    """
    if trust_remote_code:
        return
    code = custom_code(folder)
    if code:
        where = f"{key}: folder {display_path(folder, root)}" if key else display_path(folder, root)
        shown = ", ".join(code[:3]) + (f" and {len(code) - 3} more" if len(code) > 3 else "")
        raise _untrusted(where, f"custom code ({shown})")


def _untrusted(where: str, what: str) -> ConfigError:
    return ConfigError(
        f"{where} holds {what} that loading it would run; set {TRUST_KEY}: true if you trust it "
        "(or use one without custom code)"
    )


def _asks_for_trust(error: BaseException) -> bool:
    """transformers' refusal of code it was not allowed to run (it names the argument that allows it)."""
    return "trust_remote_code" in str(error)
