"""Tokenize an export into flat token files: the one implementation the stage and the data module share.

An export is checked against its manifest first; its splits are then encoded by
:mod:`src.data.encoding`, and the folder is written whole or not at all.
"""

from __future__ import annotations

import logging
from itertools import islice
from pathlib import Path
from typing import Any

from src.data.encoding import CHUNK_BYTES, encode_split, iter_documents
from src.data.fast_encoder import build_encoder, document_frame
from src.data.manifests import (
    MANIFEST,
    ExportManifest,
    TokenizerInfo,
    TokenManifest,
    TokenSource,
)
from src.data.raw_export import VALIDATION, read_manifest
from src.data.token_files import TOKENIZER_DIR, read_token_manifest, token_dtype, verify_token_files
from src.data.tokenizer_setup import (
    eos_id,
    tokenizer_fingerprint,
)
from src.errors import PipelineError
from src.paths import display_path
from src.utils.files import atomic_directory, sha256_file

log = logging.getLogger(__name__)

_PROBE_DOCUMENTS = 200


def export_hashes(export_dir: Path) -> dict[str, str]:
    """SHA-256 of each file of an export: what the tokens were made from."""
    return {path.name: sha256_file(path) for path in sorted(export_dir.iterdir()) if path.is_file()}


def verified_export(export_dir: Path) -> tuple[ExportManifest, dict[str, str]]:
    """The export's manifest and file hashes, after checking every split file is the one it names.

    A split file missing, cut short or edited after the download (a half-written copy, a
    hand edit) would be tokenized into wrong tokens, or fail half-way with a parser error;
    the hashes are needed for the token manifest anyway.
    """
    export = read_manifest(export_dir)
    hashes = export_hashes(export_dir)
    for info in export.splits.values():
        path = export_dir / info.file
        if info.file not in hashes:
            raise PipelineError(
                f"{display_path(path)}: missing; re-run `dvc repro download` (or `dvc checkout`)"
            )
        if hashes[info.file] != info.sha256:
            raise PipelineError(
                f"{display_path(path)}: its bytes are not the ones {MANIFEST} names (sha256 "
                f"{hashes[info.file][:12]}, expected {info.sha256[:12]}); re-run `dvc repro download` "
                "(or `dvc checkout`)"
            )
    return export, hashes


def is_up_to_date(token_dir: Path, tokenizer: Any, export_dir: Path) -> bool:
    """True when ``token_dir`` already holds this export tokenized by this tokenizer, intact."""
    if not (token_dir / MANIFEST).is_file():
        return False
    try:
        manifest = read_token_manifest(token_dir)
    except PipelineError:  # damaged or of another format: make it again
        return False
    if manifest.tokenizer.sha256 != tokenizer_fingerprint(tokenizer):
        return False
    if manifest.source.files != export_hashes(export_dir):
        return False
    try:
        verify_token_files(token_dir, manifest)  # every byte as the manifest says, not just the sizes
    except PipelineError:
        return False
    return True


def tokenize_export(
    export_dir: Path,
    token_dir: Path,
    tokenizer: Any,
    *,
    name: str,
    kind: str,
    threads: int,
    eos_token: str | None = None,
    settings: dict[str, Any] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    verified: tuple[ExportManifest, dict[str, str]] | None = None,
) -> TokenManifest:
    """Tokenize every split of ``export_dir`` into ``token_dir`` (written atomically); return the manifest.

    ``verified``: what :func:`verified_export` returned for ``export_dir``, if the caller checked it
    already (each export file is then hashed once).
    """
    export, source_hashes = verified or verified_export(export_dir)
    eos = eos_id(tokenizer, eos_token)
    eos_text = tokenizer.convert_ids_to_tokens(eos)
    frame = document_frame(tokenizer, eos)
    vocab_size = len(tokenizer)
    dtype = token_dtype(vocab_size)
    splits = export.splits
    probe_split = VALIDATION if VALIDATION in splits else next(iter(splits))
    probe = list(islice(iter_documents(export_dir / splits[probe_split].file), _PROBE_DOCUMENTS))
    encoder = build_encoder(tokenizer, frame, probe)
    log.info(
        "tokenizing %s with %s (%d threads, %s)", display_path(export_dir), encoder.name, threads, dtype.name
    )
    with atomic_directory(token_dir) as staging:
        tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
        written = {
            split: encode_split(
                export_dir / info.file,
                staging / f"{split}.bin",
                encoder,
                dtype,
                threads=threads,
                documents=info.rows,
                chunk_bytes=chunk_bytes,
            )
            for split, info in splits.items()
        }
        manifest = TokenManifest(
            tokenizer=TokenizerInfo(
                name=name,
                kind=kind,
                sha256=tokenizer_fingerprint(tokenizer),
                vocab_size=vocab_size,
                eos_token=eos_text,
                eos_id=eos,
                document_start=list(frame.start),
                document_end=list(frame.end),
                files=TOKENIZER_DIR,
                settings=settings or {},
            ),
            dtype=dtype.name,
            splits=written,
            source=TokenSource(export.dataset, source_hashes),
        )
        (staging / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    for split, info in written.items():
        log.info("%s: %s tokens in %s documents", split, f"{info.tokens:,}", f"{info.documents:,}")
    return manifest
