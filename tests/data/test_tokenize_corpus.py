"""Tokenizing an export: reproducible bytes, counts that match, ids equal to the HF tokenizer's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from src.config import TokenizeConfig, load_params
from src.data.download import download_all
from src.data.encoding import encode_split, iter_documents
from src.data.manifests import TokenSplit
from src.data.raw_export import read_manifest
from src.data.token_files import read_token_manifest
from src.data.tokenize_corpus import is_up_to_date, tokenize_export
from src.data.tokenize_stages import make_tokenizer, tokenize_from_params
from src.data.tokenizer_setup import tokenizer_fingerprint, train_bpe
from src.errors import PipelineError


def test_stage_output_is_byte_identical_across_runs_and_thread_counts(
    make_params, tiny_data, token_dir: Path, tmp_path: Path, folder_bytes
) -> None:
    params = load_params(make_params(tmp_path / "own", data="export"))
    with pytest.raises(PipelineError, match=r"made_by.json: not found; run `dvc repro tokenizer` first$"):
        tokenize_from_params(params, "kjv")  # the tokenizer stage has not run
    assert folder_bytes(make_tokenizer(params)) == folder_bytes(tiny_data.tokenizer)
    shared = folder_bytes(token_dir)  # made by the same stage code, with every core
    again = folder_bytes(tokenize_from_params(params, "kjv"))
    one_thread = dataclasses.replace(params, tokenize=dataclasses.replace(params.tokenize, num_proc=1))
    single = folder_bytes(tokenize_from_params(one_thread, "kjv"))
    assert shared == again == single
    assert {"train.bin", "validation.bin", "manifest.json", "tokenizer/tokenizer.json"} <= set(shared)


def test_chunk_size_does_not_change_the_bytes(
    tiny_params, tiny_export: Path, tmp_path: Path, folder_bytes
) -> None:
    tokenizer = train_bpe(iter_documents(tiny_export / "train.jsonl"), tiny_params.tokenize)
    outputs = []
    for chunk_bytes, threads in ((1 << 20, 2), (2_000, 2), (300, 1)):
        out = tmp_path / f"tok_{chunk_bytes}"
        tokenize_export(
            tiny_export, out, tokenizer, name="bpe", kind="test", threads=threads, chunk_bytes=chunk_bytes
        )
        outputs.append(folder_bytes(out))
    assert outputs[0] == outputs[1] == outputs[2]


def test_manifest_counts_match_the_files(token_dir: Path, tiny_export: Path) -> None:
    manifest = read_token_manifest(token_dir)
    export = read_manifest(tiny_export)
    eos = manifest.tokenizer.eos_id
    assert manifest.dtype == "uint16"
    assert manifest.source.dataset == "kjv"
    assert (manifest.tokenizer.name, manifest.tokenizer.vocab_size) == ("bpe", 600)
    assert manifest.tokenizer.settings == {
        "vocab_size": 600,
        "min_frequency": 2,
        "special_tokens": ["<|endoftext|>"],
    }
    assert set(manifest.splits) == set(export.splits) == {"train", "validation"}
    for split, info in manifest.splits.items():
        ids = np.fromfile(token_dir / info.file, dtype="<u2")
        assert ids.size == info.tokens
        assert info.documents == export.splits[split].rows == int((ids == eos).sum())
        assert ids[-1] == eos
        rows = (tiny_export / export.splits[split].file).read_text(encoding="utf-8").splitlines()
        assert info.text_bytes == sum(len(json.loads(row)["text"].encode("utf-8")) for row in rows)


def test_ids_equal_the_hugging_face_tokenizer_per_document(token_dir: Path, tiny_export: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(token_dir / "tokenizer"))
    eos = tokenizer.eos_token_id
    for split in ("train", "validation"):
        documents = list(iter_documents(tiny_export / f"{split}.jsonl"))
        expected = [i for ids in tokenizer(documents)["input_ids"] for i in [*ids, eos]]
        assert np.fromfile(token_dir / f"{split}.bin", dtype="<u2").tolist() == expected


def test_up_to_date_only_with_the_same_tokenizer_export_and_intact_files(
    token_dir: Path, tiny_export: Path, tmp_path: Path, make_params
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(token_dir / "tokenizer"))
    assert is_up_to_date(token_dir, tokenizer, tiny_export)
    stranger = train_bpe(iter(["something else entirely"] * 20), TokenizeConfig(vocab_size=300))
    assert not is_up_to_date(token_dir, stranger, tiny_export)
    copy = load_params(make_params(tmp_path / "copy", data="copy")).paths.tokenized_dir("bpe")
    (copy / "validation.bin").write_bytes(b"")
    assert not is_up_to_date(copy, tokenizer, tiny_export)
    assert not is_up_to_date(tmp_path / "nothing", tokenizer, tiny_export)


def test_ids_that_do_not_fit_the_dtype_are_refused(tmp_path: Path) -> None:
    class Wide:
        name = "wide"

        def encode_documents(self, documents: list[str]) -> np.ndarray:
            return np.array([70_000, 1], dtype=np.uint32)

    source = tmp_path / "x.jsonl"
    source.write_text('{"text": "a"}\n')
    with pytest.raises(PipelineError, match="token id 70000 does not fit uint16"):
        encode_split(source, tmp_path / "x.bin", Wide(), np.dtype("<u2"), threads=1)
    written = encode_split(source, tmp_path / "y.bin", Wide(), np.dtype("<u4"), threads=1)
    assert isinstance(written, TokenSplit)
    assert (written.file, written.tokens, written.documents) == ("y.bin", 2, 1)
    assert np.fromfile(tmp_path / "y.bin", dtype="<u4").tolist() == [70_000, 1]


def test_missing_export_is_a_clear_error(make_params, tmp_path: Path) -> None:
    params = load_params(make_params(tmp_path, data="empty"))
    with pytest.raises(PipelineError, match=r"no export here; run `dvc repro download` first"):
        make_tokenizer(params)
    with pytest.raises(PipelineError, match=r"no export here; run `dvc repro download` first"):
        tokenize_from_params(params, "kjv")
    with pytest.raises(
        PipelineError, match=r"^tokenize.datasets: 'notes' is not listed \(kjv\); add it there$"
    ):
        tokenize_from_params(params, "notes")


def test_every_dataset_is_encoded_with_the_one_tokenizer(
    make_params, two_local_datasets, tmp_path: Path
) -> None:
    """The tokenizer stage makes it once (the BPE from the first dataset); each dataset's stage copies
    it into its own token folder, so the tokens of all of them share one fingerprint."""
    import yaml

    data = two_local_datasets(tmp_path)
    data["tokenize"].update(datasets=["first", "second"], vocab_size=300)
    data["paths"]["cache_dir"] = str(tmp_path / "cache")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    params = load_params(tmp_path / "params.yaml")
    download_all(params)
    made = make_tokenizer(params)
    fingerprints = set()
    for name in ("first", "second"):
        manifest = read_token_manifest(tokenize_from_params(params, name))
        assert manifest.tokenizer.kind == "byte-level BPE trained on the train split of first"
        fingerprints.add(manifest.tokenizer.sha256)
    assert fingerprints == {tokenizer_fingerprint(AutoTokenizer.from_pretrained(str(made)))}


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_pretrained_tokenizers_frame_every_document_as_they_frame_a_text(
    pretrained_tokenizers: Path, tiny_export: Path, tmp_path: Path, kind: str
) -> None:
    """GPT-2's configuration: documents then EOS; a Llama-style one: BOS, document, EOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(pretrained_tokenizers / kind))
    manifest = tokenize_export(
        tiny_export, tmp_path / kind, tokenizer, name=kind, kind="pretrained", threads=2
    )
    info = manifest.tokenizer
    assert (info.eos_token, info.eos_id) == (tokenizer.eos_token, tokenizer.eos_token_id)
    assert info.document_start == ([tokenizer.bos_token_id] if kind == "llama" else [])
    assert info.document_end == [tokenizer.eos_token_id]
    documents = list(iter_documents(tiny_export / "validation.jsonl"))
    expected = [i for ids in tokenizer(documents)["input_ids"] for i in [*ids, tokenizer.eos_token_id]]
    assert np.fromfile(tmp_path / kind / "validation.bin", dtype="<u2").tolist() == expected
    assert manifest.splits["validation"].documents == len(documents)
