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


def document_line(text: Any) -> bytes | None:
    """The JSON line of one document, or None for a blank row (it has no text to learn from)."""
    if isinstance(text, str) and text.strip():
        return (json.dumps({"text": text}, ensure_ascii=False) + "\n").encode("utf-8")
    return None


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
        self.handle.write(line)
        self.digest.update(line)
        self.rows += 1

    def summary(self) -> ExportSplit:
        return ExportSplit(Path(self.handle.name).name, self.rows, self.digest.hexdigest())


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
    with atomic_directory(target) as staging:
        for plan in plans:
            names = [plan.source] if plan.validation_mask is None else [TRAIN, VALIDATION]
            with ExitStack() as files:
                writers = {
                    n: _SplitWriter(files.enter_context(open(staging / f"{n}.jsonl", "wb"))) for n in names
                }
                row = 0
                for batch in splits[plan.source].iter(batch_size=_BATCH_ROWS):
                    texts = batch[text_column]
                    for offset, text in enumerate(texts):
                        line = document_line(text)
                        if line is None:
                            continue
                        held_out = plan.validation_mask is not None and plan.validation_mask[row + offset]
                        writers[VALIDATION if held_out else names[0]].write(line)
                        kill_point("export.row")
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
