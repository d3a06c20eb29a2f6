"""The bodies of the ``tokenizer`` and ``tokenize@<dataset>`` stages: params in, one folder out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from src.config import BPE, Params
from src.data.encoding import iter_documents
from src.data.manifests import TOKENIZER_RECORD, ExportManifest, ExportSplit, TokenizerRecord
from src.data.raw_export import TRAIN, VALIDATION
from src.data.tokenize_corpus import tokenize_export, verified_export
from src.data.tokenizer_setup import (
    eos_id,
    load_pretrained,
    load_tokenizer_folder,
    pretrained_eos_token,
    train_bpe,
)
from src.errors import ConfigError, PipelineError
from src.paths import display_path, resolve_path
from src.utils.faults import kill_point
from src.utils.files import atomic_directory, check_writable

log = logging.getLogger(__name__)


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
