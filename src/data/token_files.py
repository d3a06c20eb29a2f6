"""Flat token files and their manifest: writing them, and reading them safely.

A split is one file of little-endian ids (``uint16`` when the vocabulary fits,
else ``uint32``), documents each followed by EOS. Training memory-maps it and
cuts windows at load time, so the block length is a training parameter.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.data.manifests import MANIFEST, TokenManifest
from src.data.raw_export import VALIDATION
from src.errors import PipelineError
from src.paths import display_path, workspace_root
from src.utils.files import sha256_file, write_text_atomic

TOKENIZER_DIR = "tokenizer"
UINT16_MAX_VOCAB = 65_535


@dataclass(frozen=True)
class TokenFolder:
    """One dataset's tokens, as the run reads them."""

    name: str
    """The dataset (``tokenize.datasets``), and the source name in per-source metrics."""
    path: Path
    manifest: TokenManifest
    manifest_sha256: str
    """SHA-256 of the token manifest, which names the hash of every token file."""


@dataclass(frozen=True)
class ValidationSources:
    """The validation sources, in the order of their batches' ``source`` ids, and the UTF-8 bytes of
    each one's text (what bits per byte divide by; empty: no bits per byte). The causal LM is told
    them when it is built, so it names its per-source metrics without asking the data."""

    names: tuple[str, ...] = ("validation",)
    text_bytes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.text_bytes and len(self.text_bytes) != len(self.names):
            raise ValueError(f"{len(self.text_bytes)} byte counts for {len(self.names)} sources")

    @classmethod
    def of(cls, manifests: Iterable[tuple[str, TokenManifest]]) -> ValidationSources:
        """The sources of these (name, token manifest) pairs, in this order."""
        pairs = list(manifests)
        return cls(
            tuple(name for name, _ in pairs),
            tuple(manifest.splits[VALIDATION].text_bytes for _, manifest in pairs),
        )


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` for vocabularies up to 65,535 tokens, ``uint32`` above."""
    return np.dtype("<u2") if vocab_size <= UINT16_MAX_VOCAB else np.dtype("<u4")


def read_token_manifest(token_dir: Path) -> TokenManifest:
    path = token_dir / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{display_path(path)}: not found; run `dvc repro tokenize` first") from None
    return TokenManifest.from_json(text, path)


def check_tokenizer(token_dir: Path, manifest: TokenManifest, fingerprint: str) -> None:
    """Refuse tokens made by another tokenizer: the ids would mean different text."""
    made_by = manifest.tokenizer.sha256
    if made_by != fingerprint:
        raise PipelineError(
            f"{display_path(token_dir / MANIFEST)}: tokens were made by tokenizer {made_by[:12]}, not by the "
            f"given one ({fingerprint[:12]}); load {display_path(token_dir / TOKENIZER_DIR)} or re-tokenize"
        )


def verified_record() -> Path:
    """Where the token files already verified are remembered: outside every DVC output."""
    return workspace_root() / "tmp" / "verified_tokens.json"


def verify_token_files(token_dir: Path, manifest: TokenManifest, record: Path | None = None) -> None:
    """Refuse token files whose bytes are not the ones the manifest names.

    Hashing is done once per file: its (size, mtime, inode) and hash are remembered in
    ``record``, and the file is hashed again only when one of them changes. So a file edited
    or replaced after tokenizing, even with the same size, is never trained on.
    """
    record = record or verified_record()
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    changed = False
    for info in manifest.splits.values():
        path = token_dir / info.file
        check_size(path, info.tokens * manifest.token_dtype().itemsize)
        stat = path.stat()
        key, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns, stat.st_ino, info.sha256]
        if known.get(key) == stamp:
            continue
        digest = sha256_file(path)
        if digest != info.sha256:
            raise PipelineError(
                f"{display_path(path)}: its bytes are not the ones {MANIFEST} names (sha256 {digest[:12]}, "
                f"expected {info.sha256[:12]}); re-run `dvc repro tokenize` (or `dvc checkout`)"
            )
        known[key], changed = stamp, True
    if changed:
        with contextlib.suppress(OSError):  # only a cache: the next run hashes again
            write_text_atomic(record, json.dumps(known, indent=1, sort_keys=True), shared=True)


def check_size(path: Path, expected: int) -> None:
    """A missing or cut-short token file is one line that says how to make it again."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PipelineError(f"{display_path(path)}: missing; re-run `dvc repro tokenize`") from None
    if size != expected:
        raise PipelineError(
            f"{display_path(path)}: truncated or damaged ({size} bytes, expected {expected}); "
            "re-run `dvc repro tokenize` (or `dvc checkout`)"
        )


def open_tokens(token_dir: Path, split: str, manifest: TokenManifest) -> np.memmap:
    """Memory-map one split's token file after checking it is complete.

    Memory-mapping keeps RSS flat whatever the corpus size: pages are read on demand.
    """
    info = manifest.splits.get(split)
    if info is None:
        raise PipelineError(
            f"{display_path(token_dir / MANIFEST)}: no split {split!r}; it has {list(manifest.splits)}"
        )
    path = token_dir / info.file
    dtype = manifest.token_dtype()
    check_size(path, info.tokens * dtype.itemsize)
    return np.memmap(path, dtype=dtype, mode="r")
