"""Loading guards: tokens are read only with their own tokenizer and only when complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.data.token_files import check_tokenizer, open_tokens, read_token_manifest
from src.data.tokenize_corpus import tokenize_from_params
from src.errors import PipelineError


@pytest.fixture
def token_dir(tiny_params, tiny_export: Path) -> Path:
    return tokenize_from_params(tiny_params)


def test_intact_files_memory_map(token_dir: Path) -> None:
    manifest = read_token_manifest(token_dir)
    tokens = open_tokens(token_dir, "train", manifest)
    assert len(tokens) == manifest["splits"]["train"]["tokens"]
    check_tokenizer(token_dir, manifest, manifest["tokenizer"]["sha256"])


def test_another_tokenizer_is_refused(token_dir: Path) -> None:
    manifest = read_token_manifest(token_dir)
    with pytest.raises(
        PipelineError, match=r"manifest.json: tokens were made by tokenizer \w{12}, not by the given"
    ):
        check_tokenizer(token_dir, manifest, "0" * 64)


def test_truncated_file_is_refused(token_dir: Path) -> None:
    manifest = read_token_manifest(token_dir)
    data = (token_dir / "train.bin").read_bytes()
    (token_dir / "train.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match=r"train.bin: truncated or damaged \(\d+ bytes, expected \d+\)"):
        open_tokens(token_dir, "train", manifest)


def test_missing_manifest_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"manifest.json: not found; run `dvc repro tokenize` first"):
        read_token_manifest(tmp_path)
