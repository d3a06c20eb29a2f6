"""The manifests that bind each stage's output to its inputs, as typed values.

Every folder the download and tokenize stages write carries a ``manifest.json``
that later stages (and people) read: which source made an export, which
tokenizer made the tokens, and the hash of every file. Reading them as typed
values (instead of string-keyed dicts in several modules) keeps one definition
of each field; writing them through :meth:`to_json` keeps the bytes canonical,
so the same inputs always give the same DVC hash.

Versioning: each manifest names its format (``format`` of an export,
``layout`` of a token folder). :meth:`from_json` refuses any other format with
one line that says which stage to re-run, so a manifest written by another
version of the pipeline is never misread.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from src.errors import ConfigError, PipelineError
from src.paths import display_path
from src.utils.files import canonical_json
from src.utils.typed_config import build

MANIFEST = "manifest.json"

#: The export format, version 2: one JSON object per line with the document's text; the manifest lists
#: the files each ``data_files`` entry matched and the builder options. (Version 1 had neither.)
EXPORT_FORMAT = 'jsonl: one {"text": ...} object per document; source files listed per data_files entry'
#: The token file layout, version 2: flat little-endian ids, each document framed as the tokenizer frames
#: a text (a BOS first when it adds one), then EOS. Version 1 had no ``document_start``/``document_end``
#: and no ``text_bytes`` per split.
TOKEN_LAYOUT = "document_start, the document's ids, document_end"
#: The tokenizer stage's record, version 1: how the tokenizer in its folder was made.
TOKENIZER_RECORD_FORMAT = "the tokenizer stage's record of its tokenizer"
#: Its file name, beside the tokenizer's own files (``AutoTokenizer.from_pretrained`` ignores it).
TOKENIZER_RECORD = "made_by.json"


@dataclass(frozen=True)
class FormatCheck:
    """Which stage writes a manifest, and the field and value that name its format version."""

    stage: str
    """The DVC stage that writes it (named in errors: ``re-run `dvc repro <stage>```)."""
    key: str
    value: str


class _Manifest:
    """What every manifest shares: canonical bytes out, a format check and one-line errors in."""

    _format: ClassVar[FormatCheck]

    def to_json(self) -> str:
        return canonical_json(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str, where: Path) -> Self:
        stage, key, expected = cls._format.stage, cls._format.key, cls._format.value
        try:
            data = json.loads(text)
        except ValueError:
            raise PipelineError(
                f"{display_path(where)}: not valid JSON; re-run `dvc repro {stage}`"
            ) from None
        if not isinstance(data, dict):
            raise PipelineError(f"{display_path(where)}: not a manifest; re-run `dvc repro {stage}`")
        if data.get(key) != expected:
            raise PipelineError(
                f"{display_path(where)}: written in another format ({data.get(key)!r}) than "
                f"this version reads; re-run `dvc repro {stage}`"
            )
        try:
            return build(cls, data, "")  # every field checked against its type, nested ones too
        except ConfigError as error:
            raise PipelineError(
                f"{display_path(where)}: damaged manifest ({error}); re-run `dvc repro {stage}`"
            ) from None


@dataclass(frozen=True)
class ExportSplit:
    """One exported split: a JSON Lines file of documents."""

    file: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class ExportSource:
    """Where an export came from: the ``load_dataset`` arguments and the hashes of its source files."""

    path: str
    name: str | None
    data_dir: str | None
    data_files: Any
    """As ``params.yaml`` gives them: files, patterns, folders, URLs."""
    files: dict[str, tuple[str, ...]]
    """Each local ``data_files`` entry and the files it matched, in the order they were read (sorted)."""
    options: dict[str, Any]
    """The builder options passed to ``load_dataset``."""
    revision: str | None
    text_column: str
    sha256: dict[str, str]
    """SHA-256 of every local source file (named as in ``files``) and cached download (by URL)."""
    rows: dict[str, int]
    """Rows per split of the source, before blank rows are dropped and validation is held out."""


@dataclass(frozen=True)
class ExportManifest(_Manifest):
    """``<cache_dir>/raw/<dataset>/manifest.json``: the download stage's record of one export."""

    dataset: str
    """The dataset's name under ``download.datasets`` (and the export folder's name)."""
    source: ExportSource
    validation_split: dict[str, Any] | str
    """``{"fraction", "seed"}`` when carved out of ``train``, or ``"from source"``."""
    splits: dict[str, ExportSplit]
    """The exported splits (filled in by :func:`~src.data.raw_export.write_export`)."""
    format: str = EXPORT_FORMAT

    _format: ClassVar[FormatCheck] = FormatCheck("download", "format", EXPORT_FORMAT)


@dataclass(frozen=True)
class TokenizerInfo:
    """The tokenizer that made a token folder (its files are saved beside the tokens)."""

    name: str
    kind: str
    sha256: str
    """:func:`~src.data.tokenizer_setup.tokenizer_fingerprint`: everything that decides the ids."""
    vocab_size: int
    eos_token: str
    eos_id: int
    document_start: list[int]
    """Ids written before every document: what ``tokenizer(text)`` puts first (its BOS, or nothing)."""
    document_end: list[int]
    """Ids written after every document: what ``tokenizer(text)`` puts last, then the EOS (if not already)."""
    files: str
    """The sub-folder holding the tokenizer, loadable with ``AutoTokenizer.from_pretrained``."""
    settings: dict[str, Any]


@dataclass(frozen=True)
class TokenizerRecord(_Manifest):
    """``<cache_dir>/tokenized/<tokenizer>/tokenizer/made_by.json``: how the tokenizer stage made the
    tokenizer every ``tokenize@<dataset>`` stage encodes with (copied into their manifests)."""

    _format: ClassVar[FormatCheck] = FormatCheck("tokenizer", "format", TOKENIZER_RECORD_FORMAT)

    name: str
    """``tokenize.tokenizer``."""
    kind: str
    settings: dict[str, Any]
    format: str = TOKENIZER_RECORD_FORMAT


@dataclass(frozen=True)
class TokenSplit:
    """One split's flat token file."""

    file: str
    tokens: int
    documents: int
    text_bytes: int
    """UTF-8 bytes of the split's documents (separators are not text): bits per byte divide by them."""
    sha256: str


@dataclass(frozen=True)
class TokenSource:
    """The export the tokens were made from, by the hash of each of its files."""

    dataset: str
    files: dict[str, str]


@dataclass(frozen=True)
class TokenManifest(_Manifest):
    """``<cache_dir>/tokenized/<tokenizer>/manifest.json``: binds tokens to their tokenizer and export."""

    _format: ClassVar[FormatCheck] = FormatCheck("tokenize", "layout", TOKEN_LAYOUT)

    tokenizer: TokenizerInfo
    dtype: str
    """``uint16`` when the vocabulary fits, else ``uint32``; always little-endian on disk."""
    splits: dict[str, TokenSplit]
    source: TokenSource
    layout: str = TOKEN_LAYOUT

    def token_dtype(self) -> np.dtype:
        """The on-disk dtype (always little-endian)."""
        return np.dtype(self.dtype).newbyteorder("<")
