"""Every kind of pretrained tokenizer: the token files hold exactly what the tokenizer itself gives.

Per document that is ``tokenizer(text)["input_ids"]`` (a BOS first when the tokenizer adds one), then
the EOS. The fast path (``build_encoder``'s choice) and every fallback must give those ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from src.data.encoding import iter_documents
from src.data.fast_encoder import (
    PROBE_TEXTS,
    PerDocumentEncoder,
    TiktokenEncoder,
    TokenizersEncoder,
    build_encoder,
    document_frame,
    tiktoken_encoding,
)
from src.data.tokenizer_setup import eos_id, pretrained_eos_token

TRICKY = [*PROBE_TEXTS, "a doc with <|endoftext|> inside", "", " ", "\n\n\n", " starts with a space"]


@pytest.fixture
def documents(tiny_export: Path) -> list[str]:
    return list(iter_documents(tiny_export / "validation.jsonl"))


def load(folder: Path, kind: str):
    return AutoTokenizer.from_pretrained(str(folder / kind))


def expected_ids(tokenizer, documents: list[str], eos: int) -> list[int]:
    """The definition, spelled with the Hugging Face tokenizer's own call."""
    ids: list[int] = []
    for encoded in tokenizer(documents)["input_ids"]:
        ids += encoded if encoded and encoded[-1] == eos else [*encoded, eos]
    return ids


def test_the_gpt2_style_folder_has_gpt2s_special_token_configuration(pretrained_tokenizers: Path) -> None:
    folder = pretrained_tokenizers / "gpt2"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "merges.txt",
        "tokenizer_config.json",
        "vocab.json",
    ]
    assert (folder / "merges.txt").read_text().startswith("#version: 0.2\n")
    vocab = json.loads((folder / "vocab.json").read_text())
    assert vocab["<|endoftext|>"] == len(vocab) - 1  # GPT-2: 50256, the last id
    tokenizer = load(pretrained_tokenizers, "gpt2")
    assert type(tokenizer).__name__ == "GPT2Tokenizer"
    assert tokenizer.unk_token == tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.unk_token_id == tokenizer.eos_token_id == len(vocab) - 1
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    assert backend["pre_tokenizer"]["type"] == "ByteLevel"
    assert backend["pre_tokenizer"]["add_prefix_space"] is False
    assert backend["decoder"]["type"] == "ByteLevel"
    assert tokenizer("Hello")["input_ids"] == tokenizer("Hello", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    ("kind", "start", "fast"),
    [
        ("gpt2", [], TiktokenEncoder),
        ("no-unk", [], TiktokenEncoder),
        ("llama", ["<s>"], PerDocumentEncoder),  # joined text loses the word-start marker: not used
        ("llama2", ["<s>"], TokenizersEncoder),
    ],
)
def test_ids_equal_the_tokenizers_own_on_the_fast_path_and_every_fallback(
    pretrained_tokenizers: Path, documents: list[str], kind: str, start: list[str], fast: type
) -> None:
    tokenizer = load(pretrained_tokenizers, kind)
    eos = eos_id(tokenizer, pretrained_eos_token(tokenizer, "<|endoftext|>"))
    frame = document_frame(tokenizer, eos)
    assert list(frame.start) == tokenizer.convert_tokens_to_ids(start)
    assert frame.end == (eos,)
    texts = [*documents[:100], *TRICKY]
    expected = expected_ids(tokenizer, texts, eos)
    chosen = build_encoder(tokenizer, frame, documents[:20])
    assert isinstance(chosen, fast)
    assert chosen.encode_documents(texts).tolist() == expected
    assert PerDocumentEncoder(tokenizer, frame).encode_documents(texts).tolist() == expected
    joined = TokenizersEncoder(tokenizer, frame).encode_documents(texts).tolist()
    assert (joined == expected) == (kind != "llama")
    if tiktoken_encoding(tokenizer) is None:
        assert fast is not TiktokenEncoder


def test_a_tokenizer_that_ends_texts_itself_gets_no_second_eos(pretrained_tokenizers: Path) -> None:
    """BERT-style ``[CLS] text [SEP]`` with ``tokenize.eos_token: [SEP]``: [SEP] is written once."""
    tokenizer = load(pretrained_tokenizers, "no-eos")
    eos = eos_id(tokenizer, pretrained_eos_token(tokenizer, "[SEP]"))
    frame = document_frame(tokenizer, eos)
    assert (frame.start, frame.end) == ((tokenizer.cls_token_id,), (eos,))
    texts = ["first document", "second one"]
    ids = build_encoder(tokenizer, frame).encode_documents(texts).tolist()
    assert ids == [i for ids in tokenizer(texts)["input_ids"] for i in ids]
    assert np.count_nonzero(np.array(ids) == eos) == 2
