"""The encoding engine: an export file's documents streamed in chunks, encoded by a thread pool.

The export is read in ~1 MB chunks of documents; a thread pool encodes them
(the fast encoders release the GIL) while this thread parses the next chunk and
writes finished ones in order. Memory stays flat whatever the corpus size, and
the bytes written do not depend on the chunk size or the number of threads.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from src.data.fast_encoder import DocumentEncoder
from src.data.manifests import TokenSplit
from src.data.raw_export import parse_document_lines
from src.errors import PipelineError
from src.paths import display_path
from src.utils.faults import kill_point

CHUNK_BYTES = 1 << 20


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
