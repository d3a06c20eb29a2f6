"""The canonical export of a dataset: the download stage's DVC output.

The Hugging Face cache holds fingerprints, lock files and mtimes that change
from machine to machine, so it cannot be a DVC output. Instead each split is
exported as JSON Lines (one ``{"text": ...}`` object per document, in source
order) with a ``manifest.json``: the same source and params always give the
same bytes, so an unchanged download never invalidates the stages after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from src.data.manifests import MANIFEST, ExportManifest, ExportSplit
from src.errors import PipelineError
from src.paths import display_path
from src.utils.faults import armed as faults_armed
from src.utils.faults import kill_point
from src.utils.files import atomic_directory

TRAIN, VALIDATION = "train", "validation"
_BATCH_ROWS = 10_000


@dataclass(frozen=True)
class SplitPlan:
    """How a source split becomes export splits: kept whole or cut into train/validation."""

    source: str
    validation_mask: np.ndarray | None = None  # (rows,) bool; None keeps the split whole


def plan_splits(row_counts: Mapping[str, int], fraction: float, seed: int) -> list[SplitPlan]:
    """Keep every source split; carve a seeded validation split out of ``train`` if there is none.

    The held-out rows are a pure function of (row count, fraction, seed), so the
    export is reproducible regardless of how the source was cached.
    """
    if VALIDATION in row_counts or TRAIN not in row_counts:
        return [SplitPlan(name) for name in row_counts]
    rows = row_counts[TRAIN]
    held_out = min(max(1, round(rows * fraction)), rows - 1) if rows > 1 else 0
    mask = np.zeros(rows, dtype=bool)
    mask[np.random.default_rng(seed).permutation(rows)[:held_out]] = True
    return [SplitPlan(TRAIN, mask)] + [SplitPlan(name) for name in row_counts if name != TRAIN]


_LINE_START, _LINE_END = '{"text": "', '"}\n'


#: ``json.dumps``'s own string encoder (the C one where there is one): ``{"text": <it>}`` is the line
#: ``json.dumps({"text": text}, ensure_ascii=False)`` gives, without a dict and an encoder per row.
_quoted = json.encoder.encode_basestring


def document_line(text: Any) -> bytes | None:
    """The JSON line of one document, or None for a blank row (it has no text to learn from)."""
    line = document_lines([text])[0]
    return None if line is None else line.encode("utf-8")


def document_lines(texts: Any) -> list[str | None]:
    """The JSON line of each document, as ``str`` (the export encodes them a batch at a time)."""
    return [
        f'{{"text": {_quoted(text)}}}\n' if isinstance(text, str) and text.strip() else None for text in texts
    ]


#: Every character Python's ``str.strip()`` removes (``str.isspace``; tests/data/test_raw_export.py
#: checks the list against this Python's).
PYTHON_SPACES = (
    0x9,
    0xA,
    0xB,
    0xC,
    0xD,
    0x1C,
    0x1D,
    0x1E,
    0x1F,
    0x20,
    0x85,
    0xA0,
    0x1680,
    0x2000,
    0x2001,
    0x2002,
    0x2003,
    0x2004,
    0x2005,
    0x2006,
    0x2007,
    0x2008,
    0x2009,
    0x200A,
    0x2028,
    0x2029,
    0x202F,
    0x205F,
    0x3000,
)
_NOT_SPACE = "[^" + "".join(f"\\x{{{c:x}}}" for c in PYTHON_SPACES) + "]"
#: Characters json escapes as ``\u00XX``: left to :func:`document_lines` (rare in text).
_RARE_CONTROL = r"[\x00-\x07\x0b\x0e-\x1f]"
#: The other escapes of json's string encoder, in the order that keeps them from escaping each other.
_ESCAPES = (
    ("\\", "\\\\"),
    ('"', '\\"'),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\t", "\\t"),
    ("\b", "\\b"),
    ("\f", "\\f"),
)


def arrow_document_lines(texts: Any) -> tuple[Any, np.ndarray]:
    """:func:`document_lines` of a pyarrow string array, computed column-wise (the same bytes,
    several times faster than a row at a time): a ``large_string`` array of every row's line, and
    which rows have content (a blank row's line is never written)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = texts.cast(pa.large_string())
    content = pc.fill_null(pc.match_substring_regex(texts, _NOT_SPACE), False)
    escaped = texts
    for raw, escape in _ESCAPES:
        escaped = pc.replace_substring(escaped, raw, escape)
    start, end, nothing = (pa.scalar(value, pa.large_string()) for value in ('{"text": "', '"}\n', ""))
    lines = pc.fill_null(pc.binary_join_element_wise(start, escaped, end, nothing), nothing)
    rare = pc.fill_null(pc.match_substring_regex(texts, _RARE_CONTROL), False)
    if pc.any(rare).as_py():
        slow = [""] * len(texts)
        for index in np.flatnonzero(rare.to_numpy(zero_copy_only=False)):
            slow[index] = document_lines([texts[int(index)].as_py()])[0] or ""
        lines = pc.if_else(rare, pa.array(slow, pa.large_string()), lines)
    return lines, content.to_numpy(zero_copy_only=False)


def selected_lines(lines: Any, rows: np.ndarray) -> tuple[bytes, int]:
    """The bytes of the ``rows`` (a bool mask) of a ``large_string`` array, in order, and their
    count: slices of its data buffer, one per run of consecutive rows, so nothing is copied twice."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    data = memoryview(lines.buffers()[2])
    edges = np.flatnonzero(np.diff(np.concatenate(([False], rows, [False])).astype(np.int8)))
    runs = zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True)
    return b"".join(data[offsets[first] : offsets[last]] for first, last in runs), int(rows.sum())


def parse_document_lines(block: bytes) -> list[str]:
    """The documents of whole export lines (``block`` ends with a newline), in order.

    Lines written by :func:`document_line` are ``{"text": "..."}``; a quote,
    newline or backslash inside the text is escaped with a backslash. So a block
    without any backslash is the texts verbatim between fixed separators, and a
    C-level split reads it several times faster than ``json.loads`` per line.
    """
    if not block:
        return []
    if b"\\" not in block:
        text = block.decode("utf-8")
        if text.startswith(_LINE_START) and text.endswith(_LINE_END):
            return text[len(_LINE_START) : -len(_LINE_END)].split(_LINE_END + _LINE_START)
    return [row["text"] for row in json.loads(b"[" + b",".join(block.splitlines()) + b"]")]


class _SplitWriter:
    """Writes one export file, hashing the bytes as they go."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.rows = 0

    def write(self, line: bytes) -> None:
        self.write_batch(line, 1)

    def write_batch(self, lines: bytes, rows: int) -> None:
        """``rows`` whole lines at once."""
        self.handle.write(lines)
        self.digest.update(lines)
        self.rows += rows

    def summary(self) -> ExportSplit:
        return ExportSplit(Path(self.handle.name).name, self.rows, self.digest.hexdigest())


def _route(texts: Any, names: list[str], mask: np.ndarray | None, row: int) -> dict[str, tuple[bytes, int]]:
    """The lines of a batch of ``texts`` (a list, or a pyarrow array) for each export split: all to
    the one split, or each row where the validation mask (from source row ``row`` on) sends it."""
    import pyarrow as pa

    if isinstance(texts, pa.Array) and (
        pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)
    ):
        lines, content = arrow_document_lines(texts)
        if mask is None:
            return {names[0]: selected_lines(lines, content)}
        held = mask[row : row + len(lines)]
        return {
            TRAIN: selected_lines(lines, content & ~held),
            VALIDATION: selected_lines(lines, content & held),
        }
    if not isinstance(texts, list):
        texts = texts.to_pylist() if hasattr(texts, "to_pylist") else list(texts)
    parts: dict[str, list[str]] = {name: [] for name in names}
    held_rows = [False] * len(texts) if mask is None else mask[row : row + len(texts)].tolist()
    for line, held_out in zip(document_lines(texts), held_rows, strict=True):
        if line is not None:
            parts[VALIDATION if held_out else names[0]].append(line)
    return {name: ("".join(kept).encode("utf-8"), len(kept)) for name, kept in parts.items()}


class EmptySplitError(PipelineError):
    """An export split would hold no document: the stages after it could not use it."""

    def __init__(self, split: str, target: Path) -> None:
        super().__init__(f"{display_path(target)}: split {split!r} would hold no document")
        self.split = split


def write_export(
    splits: Mapping[str, Any],
    text_column: str,
    plans: list[SplitPlan],
    target: Path,
    manifest: ExportManifest,
) -> ExportManifest:
    """Write ``<split>.jsonl`` files and ``manifest.json`` into ``target``, atomically.

    ``splits`` maps split names to ``datasets.Dataset`` objects (anything with
    ``iter(batch_size)`` works); ``manifest`` describes the source (its
    ``splits`` are filled in here). Returns the manifest that was written.

    A split left without documents (all its rows blank, or none held out) raises
    :class:`EmptySplitError` before anything replaces ``target``: tokenizing and training
    would only fail on it later, further from the cause.
    """
    exported: dict[str, ExportSplit] = {}
    armed = faults_armed()
    with atomic_directory(target) as staging:
        for plan in plans:
            names = [plan.source] if plan.validation_mask is None else [TRAIN, VALIDATION]
            with ExitStack() as files:
                writers = {
                    n: _SplitWriter(files.enter_context(open(staging / f"{n}.jsonl", "wb"))) for n in names
                }
                row, mask = 0, plan.validation_mask
                for batch in splits[plan.source].iter(batch_size=_BATCH_ROWS):
                    texts = batch[text_column]
                    if armed:  # a kill point per document: the fault tests aim at a row
                        for text in texts if isinstance(texts, list) else texts.to_pylist():
                            if document_line(text) is not None:
                                kill_point("export.row")
                    for name, (data, rows) in _route(texts, names, mask, row).items():
                        writers[name].write_batch(data, rows)
                    row += len(texts)
            exported.update({name: writer.summary() for name, writer in writers.items()})
        for name, split in exported.items():
            if split.rows == 0:
                raise EmptySplitError(name, target)
        manifest = dataclasses.replace(manifest, splits=exported)
        (staging / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def read_manifest(export_dir: Path) -> ExportManifest:
    """The manifest of an export folder; a missing export says which stage makes it."""
    path = export_dir / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(
            f"{display_path(export_dir)}: no export here; run `dvc repro download` first"
        ) from None
    return ExportManifest.from_json(text, path)
