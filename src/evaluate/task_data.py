"""The built-in evaluation tasks' data, made from one source's validation export.

``documents.jsonl`` is the validation split as exported (the ``bpb`` task scores each document);
``continuation.jsonl`` asks, for each document long enough, which of ``choices`` endings is its own:
the true one against endings of other documents of the same source, so no ending is out of place by
its style. Everything is decided by the export's bytes and the seed, so the files are the same bytes
on every machine and thread count (DVC hashes them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from src.data.raw_export import parse_document_lines, read_manifest
from src.errors import PipelineError
from src.paths import display_path
from src.utils.files import atomic_directory, canonical_json, sha256_file

DOCUMENTS, CONTINUATION, TASK_MANIFEST = "documents.jsonl", "continuation.jsonl", "manifest.json"
#: Version of this folder's layout (``manifest.json``'s ``format``).
TASK_DATA_FORMAT = "lmpipe eval task data v1"
#: A document is split into a context and an ending only if each has at least this many words.
MIN_WORDS = 2


@dataclass(frozen=True)
class Question:
    """One multiple-choice question: the document's beginning and the endings to choose from."""

    context: str
    choices: tuple[str, ...]
    label: int
    """Index of the document's own ending in ``choices``."""


def split_document(text: str) -> tuple[str, str] | None:
    """The document cut at the space nearest its middle (context, ending), or None if too short."""
    words = text.split(" ")
    if sum(1 for word in words if word) < 2 * MIN_WORDS:
        return None
    middle, best = len(text) / 2, None
    for index, char in enumerate(text):
        if char == " " and (best is None or abs(index - middle) < abs(best - middle)):
            best = index
    context, ending = text[:best].rstrip(), text[best + 1 :].lstrip()
    if len(context.split()) < MIN_WORDS or len(ending.split()) < MIN_WORDS:
        return None
    return context, ending


def continuation_questions(documents: Sequence[str], choices: int, seed: int) -> list[Question]:
    """One question per document that splits: its ending among ``choices - 1`` other endings.

    Wrong endings are drawn from the other documents' endings, never equal to the right one; the
    right one's position is drawn too, so no position is the answer more often than chance.
    """
    pairs = [split for text in documents if (split := split_document(text)) is not None]
    endings = [ending for _, ending in pairs]
    if len(set(endings)) < choices:
        raise PipelineError(
            f"evaluate.choices: {choices} endings per question need at least {choices} different "
            f"documents in the validation split, it has {len(set(endings))}; lower evaluate.choices "
            "or raise the dataset's validation_fraction"
        )
    rng = random.Random(seed)
    questions = []
    for context, ending in pairs:
        wrong: list[str] = []
        while len(wrong) < choices - 1:
            other = endings[rng.randrange(len(endings))]
            if other != ending and other not in wrong:
                wrong.append(other)
        label = rng.randrange(choices)
        options = [*wrong[:label], ending, *wrong[label:]]
        questions.append(Question(context, tuple(options), label))
    return questions


def write_task_data(export_dir: Path, target: Path, dataset: str, choices: int, seed: int) -> dict:
    """Write ``target`` (documents, questions and a manifest) from the export in ``export_dir``.

    The validation file's bytes are checked against the export's manifest first: a damaged export
    is one line, and the last good task data stays.
    """
    manifest = read_manifest(export_dir)
    split = manifest.splits.get("validation")
    if split is None:
        raise PipelineError(
            f"{display_path(export_dir)}: the export has no validation split; give "
            f"download.datasets.{dataset}.validation_fraction a value above 0"
        )
    source = export_dir / split.file
    raw = source.read_bytes()
    if hashlib.sha256(raw).hexdigest() != split.sha256:
        raise PipelineError(
            f"{display_path(source)}: its bytes are not the ones manifest.json names; "
            f"re-run `dvc repro download@{dataset}` (or `dvc checkout`)"
        )
    documents = parse_document_lines(raw)
    questions = continuation_questions(documents, choices, seed)
    with atomic_directory(target) as staging:
        (staging / DOCUMENTS).write_bytes(raw)
        lines = (json.dumps(dataclasses.asdict(q), ensure_ascii=False) for q in questions)
        (staging / CONTINUATION).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        record = {
            "format": TASK_DATA_FORMAT,
            "dataset": dataset,
            "validation_sha256": split.sha256,
            "documents": len(documents),
            "questions": len(questions),
            "choices": choices,
            "seed": seed,
            "files": {name: sha256_file(staging / name) for name in (DOCUMENTS, CONTINUATION)},
        }
        (staging / TASK_MANIFEST).write_text(canonical_json(record), encoding="utf-8")
    return record


def read_task_data(folder: Path, dataset: str) -> dict:
    """The manifest of a task-data folder, its files' bytes checked (the stage that makes it is named
    in every error)."""
    fix = f"re-run `dvc repro eval_data@{dataset}`"
    try:
        record = json.loads((folder / TASK_MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{display_path(folder)}: no evaluation data here; {fix}") from None
    except ValueError:
        raise PipelineError(f"{display_path(folder / TASK_MANIFEST)}: not valid JSON; {fix}") from None
    if not isinstance(record, dict) or record.get("format") != TASK_DATA_FORMAT:
        raise PipelineError(f"{display_path(folder / TASK_MANIFEST)}: another format; {fix}")
    for name, digest in (record.get("files") or {}).items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            damaged = f"{display_path(path)}: its bytes are not the ones manifest.json names"
            raise PipelineError(f"{damaged}; {fix}")
    return record
