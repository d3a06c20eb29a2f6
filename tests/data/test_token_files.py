"""Loading guards: tokens are read only with their own tokenizer and only when complete."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from src.data.token_files import (
    check_tokenizer,
    open_tokens,
    read_token_manifest,
    token_dtype,
    verify_token_files,
)
from src.errors import PipelineError


def test_intact_files_memory_map(token_dir: Path, tmp_path: Path) -> None:
    manifest = read_token_manifest(token_dir)
    tokens = open_tokens(token_dir, "train", manifest)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.dtype("<u2")
    assert len(tokens) == manifest.splits["train"].tokens
    verify_token_files(token_dir, manifest, record=tmp_path / "verified.json")  # no error: intact
    check_tokenizer(token_dir, manifest, manifest.tokenizer.sha256)


def test_another_tokenizer_is_refused(token_dir: Path) -> None:
    manifest = read_token_manifest(token_dir)
    with pytest.raises(
        PipelineError, match=r"manifest.json: tokens were made by tokenizer \w{12}, not by the given"
    ):
        check_tokenizer(token_dir, manifest, "0" * 64)


def test_truncated_or_missing_file_is_refused(token_dir: Path, tmp_path: Path) -> None:
    tokens = Path(shutil.copytree(token_dir, tmp_path / "tokens"))
    manifest = read_token_manifest(tokens)
    data = (tokens / "train.bin").read_bytes()
    (tokens / "train.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match=r"train.bin: truncated or damaged"):
        verify_token_files(tokens, manifest, record=tmp_path / "verified.json")
    with pytest.raises(
        PipelineError,
        match=r"train.bin: truncated or damaged \(\d+ bytes, expected \d+\); re-run `dvc repro tokenize`",
    ):
        open_tokens(tokens, "train", manifest)
    (tokens / "train.bin").unlink()
    with pytest.raises(PipelineError, match=r"train.bin: missing; re-run `dvc repro tokenize`$"):
        open_tokens(tokens, "train", manifest)
    with pytest.raises(PipelineError, match=r"no split 'test'; it has \['train', 'validation'\]"):
        open_tokens(tokens, "test", manifest)


def test_missing_manifest_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"manifest.json: not found; run `dvc repro tokenize` first"):
        read_token_manifest(tmp_path)


def test_dtype_follows_vocabulary_size() -> None:
    assert token_dtype(8192) == np.uint16
    assert token_dtype(65_535) == np.uint16
    assert token_dtype(65_536) == np.uint32
    assert token_dtype(200_000) == np.uint32
