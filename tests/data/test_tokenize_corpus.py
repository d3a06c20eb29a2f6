"""Tokenizing an export: reproducible bytes, counts that match, ids equal to the HF tokenizer's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from src.config import Params
from src.data.raw_export import read_manifest
from src.data.token_files import token_dtype
from src.data.tokenize_corpus import encode_split, iter_documents, tokenize_export, tokenize_from_params
from src.data.tokenizer_setup import train_bpe
from src.errors import PipelineError


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_stage_output_is_byte_identical_across_runs_and_thread_counts(
    tiny_params: Params, tiny_export: Path
) -> None:
    first = files_of(tokenize_from_params(tiny_params))
    again = files_of(tokenize_from_params(tiny_params))
    one_thread = dataclasses.replace(
        tiny_params, tokenize=dataclasses.replace(tiny_params.tokenize, num_proc=1)
    )
    single = files_of(tokenize_from_params(one_thread))
    assert first == again == single
    assert {"train.bin", "validation.bin", "manifest.json", "tokenizer/tokenizer.json"} <= set(first)


def test_chunk_size_does_not_change_the_bytes(tiny_params: Params, tiny_export: Path, tmp_path: Path) -> None:
    tokenizer = train_bpe(iter_documents(tiny_export / "train.jsonl"), tiny_params.tokenize)
    outputs = []
    for chunk_bytes, threads in ((1 << 20, 2), (2_000, 2), (300, 1)):
        out = tmp_path / f"tok_{chunk_bytes}"
        tokenize_export(
            tiny_export, out, tokenizer, name="bpe", kind="test", threads=threads, chunk_bytes=chunk_bytes
        )
        outputs.append(files_of(out))
    assert outputs[0] == outputs[1] == outputs[2]


def test_manifest_counts_match_the_files(tiny_params: Params, tiny_export: Path) -> None:
    token_dir = tokenize_from_params(tiny_params)
    manifest = json.loads((token_dir / "manifest.json").read_text())
    export = read_manifest(tiny_export)
    eos = manifest["tokenizer"]["eos_id"]
    assert manifest["dtype"] == "uint16"
    assert manifest["source"]["dataset"] == "kjv"
    for split, info in manifest["splits"].items():
        ids = np.fromfile(token_dir / info["file"], dtype="<u2")
        assert ids.size == info["tokens"]
        assert info["documents"] == export["splits"][split]["rows"] == int((ids == eos).sum())
        assert ids[-1] == eos


def test_ids_equal_the_hugging_face_tokenizer_per_document(tiny_params: Params, tiny_export: Path) -> None:
    from transformers import AutoTokenizer

    token_dir = tokenize_from_params(tiny_params)
    tokenizer = AutoTokenizer.from_pretrained(str(token_dir / "tokenizer"))
    eos = tokenizer.eos_token_id
    for split in ("train", "validation"):
        documents = list(iter_documents(tiny_export / f"{split}.jsonl"))
        expected = [i for ids in tokenizer(documents)["input_ids"] for i in [*ids, eos]]
        assert np.fromfile(token_dir / f"{split}.bin", dtype="<u2").tolist() == expected


def test_dtype_follows_vocabulary_size() -> None:
    assert token_dtype(8192) == np.uint16
    assert token_dtype(65_535) == np.uint16
    assert token_dtype(65_536) == np.uint32
    assert token_dtype(200_000) == np.uint32


def test_ids_that_do_not_fit_the_dtype_are_refused(tmp_path: Path) -> None:
    class Wide:
        name = "wide"

        def encode_documents(self, documents: list[str]) -> np.ndarray:
            return np.array([70_000, 1], dtype=np.uint32)

    source = tmp_path / "x.jsonl"
    source.write_text('{"text": "a"}\n')
    with pytest.raises(PipelineError, match="token id 70000 does not fit uint16"):
        encode_split(source, tmp_path / "x.bin", Wide(), np.dtype("<u2"), threads=1)
    assert encode_split(source, tmp_path / "y.bin", Wide(), np.dtype("<u4"), threads=1)["tokens"] == 2


def test_missing_export_is_a_clear_error(tiny_params: Params) -> None:
    with pytest.raises(PipelineError, match=r"no export here; run `dvc repro download` first"):
        tokenize_from_params(tiny_params)
