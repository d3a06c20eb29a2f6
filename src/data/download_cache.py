"""Integrity of the remote source files kept under ``<cache_dir>/raw/downloads``.

``datasets`` re-downloads a remote file only when it is missing: a truncated or
corrupted copy would be reused silently. So after a successful load we record
each file's SHA-256 next to it (``<file>.sha256``), and before the next load we
drop any copy whose bytes no longer match, which makes ``load_dataset`` fetch it
afresh and rebuild the dataset.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from src.utils.files import sha256_file, write_text_atomic

log = logging.getLogger(__name__)

_SIDECAR = ".sha256"


def find_cached_download(downloads_dir: Path, url: str) -> Path | None:
    """The newest local copy of ``url`` that ``datasets`` keeps (it names files by a URL hash)."""
    if not downloads_dir.is_dir():
        return None
    copies = []
    for meta in downloads_dir.glob("*.json"):
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("url") != url:
                continue
        except (OSError, ValueError):
            continue
        data = meta.with_suffix("")
        if data.is_file():
            copies.append(data)
    return max(copies, key=lambda p: p.stat().st_mtime_ns, default=None)


def drop_corrupted_downloads(downloads_dir: Path, urls: tuple[str, ...]) -> list[str]:
    """Delete cached copies of ``urls`` whose bytes differ from their recorded hash; return those URLs."""
    dropped = []
    for url in urls:
        copy = find_cached_download(downloads_dir, url)
        if copy is None:
            continue
        sidecar = copy.with_name(copy.name + _SIDECAR)
        if not sidecar.is_file():
            continue
        if sha256_file(copy) == sidecar.read_text(encoding="utf-8").strip():
            continue
        log.warning("cached download of %s is corrupted (%s); downloading it again", url, copy.name)
        for path in (copy, sidecar, copy.with_name(copy.name + ".json"), copy.with_name(copy.name + ".lock")):
            path.unlink(missing_ok=True)
        dropped.append(url)
    return dropped


def record_downloads(downloads_dir: Path, urls: tuple[str, ...]) -> dict[str, str]:
    """Hash the cached copy of each URL, store the hash beside it, and return ``{url: sha256}``."""
    hashes = {}
    for url in urls:
        copy = find_cached_download(downloads_dir, url)
        if copy is None:
            raise FileNotFoundError(f"no cached download of {url} under {downloads_dir}")
        digest = sha256_file(copy)
        write_text_atomic(copy.with_name(copy.name + _SIDECAR), digest + "\n")
        hashes[url] = digest
    return hashes
