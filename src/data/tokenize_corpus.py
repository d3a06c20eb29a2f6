"""Tokenize an export into flat token files: the one implementation the stage and the data module share.

The export is streamed in ~1 MB chunks of documents; a thread pool encodes them
(the fast encoders release the GIL) while this thread parses the next chunk and
writes finished ones in order. Memory stays flat whatever the corpus size, and
the bytes written do not depend on the chunk size or the number of threads.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from src.config import BPE, Params
from src.data.fast_encoder import DocumentEncoder, build_encoder, document_frame
from src.data.manifests import (
    MANIFEST,
    TOKENIZER_RECORD,
    ExportManifest,
    ExportSplit,
    TokenizerInfo,
    TokenizerRecord,
    TokenManifest,
    TokenSource,
    TokenSplit,
)
from src.data.raw_export import TRAIN, VALIDATION, parse_document_lines, read_manifest
from src.data.token_files import TOKENIZER_DIR, read_token_manifest, token_dtype, verify_token_files
from src.data.tokenizer_setup import (
    eos_id,
    load_pretrained,
    load_tokenizer_folder,
    pretrained_eos_token,
    tokenizer_fingerprint,
    train_bpe,
)
from src.errors import ConfigError, PipelineError
from src.paths import display_path, resolve_path
from src.utils.faults import kill_point
from src.utils.files import atomic_directory, check_writable, sha256_file

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_PROBE_DOCUMENTS = 200


def iter_document_chunks(jsonl: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[list[str]]:
    """Documents of an export file, in order, in lists of about ``chunk_bytes`` of JSON lines."""
    with open(jsonl, "rb") as handle:
        carry = b""
        while block := handle.read(chunk_bytes):
            block = carry + block
            cut = block.rfind(b"\n") + 1  # whole lines only; the rest waits for the next block
            carry = block[cut:]
            if cut:
                yield parse_document_lines(block[:cut])
        if carry:
            yield parse_document_lines(carry + b"\n")


def iter_documents(jsonl: Path) -> Iterator[str]:
    for chunk in iter_document_chunks(jsonl):
        yield from chunk


def encode_split(
    jsonl: Path,
    out: Path,
    encoder: DocumentEncoder,
    dtype: np.dtype,
    *,
    threads: int,
    documents: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> TokenSplit:
    """Write the ids of every document in ``jsonl`` to ``out``; return its entry in the manifest."""
    from tqdm.auto import tqdm

    digest, tokens, docs, text_bytes = hashlib.sha256(), 0, 0, 0
    started = time.perf_counter()
    limit = np.iinfo(dtype).max

    def encode(documents: list[str]) -> tuple[np.ndarray, int]:  # runs in a worker thread
        ids = encoder.encode_documents(documents)
        if ids.size and int(ids.max()) > limit:
            raise PipelineError(f"{display_path(out)}: token id {int(ids.max())} does not fit {dtype.name}")
        return ids.astype(dtype, copy=False), sum(len(doc.encode("utf-8")) for doc in documents)

    with (
        ThreadPoolExecutor(max_workers=threads) as pool,
        open(out, "wb") as handle,
        tqdm(total=documents, unit="doc", desc=f"tokenize {jsonl.stem}", mininterval=0.5) as progress,
    ):
        pending: deque = deque()

        def write_oldest() -> None:
            nonlocal tokens, docs, text_bytes
            count, future = pending.popleft()
            ids, size = future.result()
            text_bytes += size
            handle.write(ids.data)
            digest.update(ids.data)
            tokens += ids.size
            docs += count
            progress.update(count)
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            progress.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
            kill_point("tokenize.chunk-written")

        for chunk in iter_document_chunks(jsonl, chunk_bytes):
            pending.append((len(chunk), pool.submit(encode, chunk)))
            if len(pending) > 2 * threads:
                write_oldest()
        while pending:
            write_oldest()
    return TokenSplit(out.name, tokens, docs, text_bytes, digest.hexdigest())


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


def make_tokenizer(params: Params) -> Path:
    """The stage ``tokenizer``: train the byte-level BPE on the train split of the first dataset of
    ``tokenize.datasets``, or load the pretrained tokenizer ``tokenize.tokenizer`` names (its EOS
    settled), and save it to ``<cache_dir>/tokenized/<tokenizer>/tokenizer``.

    Made once, here: every ``tokenize@<dataset>`` stage encodes with this folder, so the datasets'
    tokens share one tokenizer by construction, and a change that leaves its bytes as they were
    (a pretrained tokenizer when the first dataset changes) re-encodes nothing.
    """
    config = params.tokenize
    folder = params.paths.tokenizer_dir(config.tokenizer)
    check_writable("paths.cache_dir", folder, kind="folder")
    if config.tokenizer == BPE:
        first = config.datasets[0]
        export_dir = params.paths.raw_dir() / first
        train = splits_to_tokenize(params, first, verified_export(export_dir)[0])[TRAIN]
        log.info(
            "training a byte-level BPE (vocabulary %d) on %s", config.vocab_size, display_path(export_dir)
        )
        tokenizer = train_bpe(iter_documents(export_dir / train.file), config, train.rows)
        kill_point("tokenize.tokenizer-trained")
        kind = f"byte-level BPE trained on the train split of {first}"
        settings = {
            "vocab_size": config.vocab_size,
            "min_frequency": config.min_frequency,
            "special_tokens": list(config.special_tokens),
        }
    else:
        model_cache = resolve_path(params.paths.model_cache)
        tokenizer = load_pretrained(
            config.tokenizer,
            model_cache,
            params.download.hub_timeout_s,
            trust_remote_code=params.model.trust_remote_code,
        )
        # Saved with the tokens: the tokenizer names the EOS they hold.
        tokenizer.eos_token = pretrained_eos_token(tokenizer, config.eos_token)
        kind, settings = "pretrained", {}
    eos_id(tokenizer)  # an EOS outside the vocabulary is one line now, not in every tokenize stage
    record = TokenizerRecord(name=config.tokenizer, kind=kind, settings=settings)
    with atomic_directory(folder) as staging:
        tokenizer.save_pretrained(str(staging))
        (staging / TOKENIZER_RECORD).write_text(record.to_json(), encoding="utf-8")
    return folder


def load_made_tokenizer(folder: Path, *, trust_remote_code: bool = False) -> tuple[Any, TokenizerRecord]:
    """The tokenizer the tokenizer stage saved in ``folder``, and its record (a tokenizer with code of
    its own loads only with ``trust_remote_code``)."""
    path = folder / TOKENIZER_RECORD
    try:
        record = TokenizerRecord.from_json(path.read_text(encoding="utf-8"), path)
    except FileNotFoundError:
        raise PipelineError(f"{display_path(path)}: not found; run `dvc repro tokenizer` first") from None
    return load_tokenizer_folder(folder, "tokenizer", trust_remote_code=trust_remote_code), record


def splits_to_tokenize(params: Params, dataset: str, export: ExportManifest) -> dict[str, ExportSplit]:
    """The export's splits, after checking it has the train and validation splits training needs."""
    missing = [split for split in (TRAIN, VALIDATION) if split not in export.splits]
    if missing:
        names = " or ".join(map(repr, missing))
        raise ConfigError(
            f"{params.download.key_of(dataset)}.data_files: the export has no {names} split (it has "
            f"{', '.join(export.splits)}); name the training files train (validation is held out of train "
            "when the source has none), then re-run `dvc repro download`"
        )
    return export.splits


def tokenize_from_params(params: Params, dataset: str) -> Path:
    """The stage ``tokenize@<dataset>``: encode one export of ``tokenize.datasets`` with the tokenizer
    stage's tokenizer into ``<cache_dir>/tokenized/<tokenizer>/<dataset>``."""
    config = params.tokenize
    if dataset not in config.datasets:
        raise ConfigError(
            f"tokenize.datasets: {dataset!r} is not listed ({', '.join(config.datasets)}); add it there"
        )
    export_dir = params.paths.raw_dir() / dataset
    token_dir = params.paths.token_dir(config.tokenizer, dataset)
    check_writable("paths.cache_dir", token_dir, kind="folder")
    export = verified_export(export_dir)
    splits_to_tokenize(params, dataset, export[0])
    tokenizer, record = load_made_tokenizer(
        params.paths.tokenizer_dir(config.tokenizer), trust_remote_code=params.model.trust_remote_code
    )
    tokenize_export(
        export_dir,
        token_dir,
        tokenizer,
        name=record.name,
        kind=record.kind,
        threads=config.threads(),
        eos_token=tokenizer.eos_token,
        settings=record.settings,
        verified=export,
    )
    return token_dir
