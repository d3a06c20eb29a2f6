"""The trained BPE, tokenizer fingerprints, and the encoders that must agree with it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from src.config import TokenizeConfig
from src.data.encoding import iter_documents
from src.data.fast_encoder import (
    PROBE_TEXTS,
    PerDocumentEncoder,
    TiktokenEncoder,
    TokenizersEncoder,
    build_encoder,
    document_frame,
)
from src.data.tokenizer_setup import (
    eos_id,
    load_pretrained,
    load_tokenizer_folder,
    pretrained_eos_token,
    tokenizer_dir_name,
    tokenizer_fingerprint,
    tokenizer_json,
    train_bpe,
)
from src.errors import ConfigError, PipelineError
from tests.conftest import TOKENIZER_KINDS

CONFIG = TokenizeConfig(vocab_size=600)


@pytest.fixture
def documents(tiny_export: Path) -> list[str]:
    return list(iter_documents(tiny_export / "train.jsonl"))


def test_training_is_deterministic(documents: list[str], token_dir: Path, tmp_path: Path) -> None:
    """Trained again here, the BPE is byte for byte the one the tokenize stage trained for the session."""
    train_bpe(iter(documents), CONFIG).save_pretrained(str(tmp_path / "again"))
    stage = (token_dir / "tokenizer" / "tokenizer.json").read_bytes()
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == stage


def test_round_trip_and_fingerprint_survive_save_and_load(documents: list[str], tmp_path: Path) -> None:
    tokenizer = train_bpe(iter(documents), CONFIG)
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(tokenizer)
    for text in [*PROBE_TEXTS, *documents[:50]]:
        assert loaded.decode(loaded(text)["input_ids"]) == text
    other = train_bpe(iter(documents), dataclasses.replace(CONFIG, vocab_size=500))
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)


def test_trained_bpe_gets_the_fast_encoder_with_identical_ids(documents: list[str]) -> None:
    tokenizer = train_bpe(iter(documents), CONFIG)
    frame = document_frame(tokenizer, eos_id(tokenizer))
    assert (frame.start, frame.end) == ((), (tokenizer.eos_token_id,))
    encoder = build_encoder(tokenizer, frame, documents[:10])
    assert isinstance(encoder, TiktokenEncoder)
    reference = PerDocumentEncoder(tokenizer, frame)
    tricky = [*PROBE_TEXTS, "a doc with <|endoftext|> inside", "", " ", "\n\n\n"]
    assert np.array_equal(encoder.encode_documents(tricky), reference.encode_documents(tricky))


def test_tokenizer_without_tiktoken_form_falls_back(documents: list[str]) -> None:
    from tokenizers import normalizers

    tokenizer = train_bpe(iter(documents), CONFIG)
    tokenizer.backend_tokenizer.normalizer = normalizers.Lowercase()
    encoder = build_encoder(tokenizer, document_frame(tokenizer, eos_id(tokenizer)))
    assert isinstance(encoder, TokenizersEncoder)
    ids = encoder.encode_documents(["Hello World"]).tolist()
    assert ids == [*tokenizer("hello world")["input_ids"], tokenizer.eos_token_id]


def test_dir_name_of_a_tokenizer_from_the_token_folder(token_dir: Path, tmp_path: Path) -> None:
    assert tokenizer_dir_name(AutoTokenizer.from_pretrained(str(token_dir / "tokenizer"))) == "bpe"
    tokenizer = train_bpe(iter(["a b c"] * 20), TokenizeConfig(vocab_size=300))
    tokenizer.save_pretrained(str(tmp_path / "mine"))
    assert tokenizer_dir_name(AutoTokenizer.from_pretrained(str(tmp_path / "mine"))) == "mine"


def test_a_tokenizer_without_a_name_needs_one() -> None:
    """Path('') is the current folder: the name check must come first, or tokenized/ itself is used."""
    tokenizer = train_bpe(iter(["a b c"] * 20), TokenizeConfig(vocab_size=300))
    assert tokenizer.name_or_path == ""
    with pytest.raises(
        ConfigError, match=r"^tokenizer: it has no name; pass tokenizer_name= to the data module$"
    ):
        tokenizer_dir_name(tokenizer)


def test_hub_tokenizer_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import src.utils.hub as hub

    monkeypatch.setattr(hub, "use_offline_hub", lambda: None)  # keep this test process online
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        PipelineError, match=r"tokenize.tokenizer: the Hugging Face Hub \(.*\) is unreachable and 'gpt2'"
    ):
        load_pretrained("gpt2", tmp_path / "model_cache", hub_timeout_s=1)


def test_eos_that_is_also_unk_and_bos_is_taken(pretrained_tokenizers: Path) -> None:
    """GPT-2: ``<|endoftext|>`` is UNK, BOS and EOS at once, and it is in the vocabulary."""
    tokenizer = AutoTokenizer.from_pretrained(str(pretrained_tokenizers / "gpt2"))
    assert eos_id(tokenizer) == tokenizer.unk_token_id == len(tokenizer) - 1


def test_the_eos_of_a_pretrained_tokenizer(pretrained_tokenizers: Path) -> None:
    llama = AutoTokenizer.from_pretrained(str(pretrained_tokenizers / "llama"))
    assert pretrained_eos_token(llama, "<|endoftext|>") == "</s>"  # its own, whatever the setting
    no_eos = AutoTokenizer.from_pretrained(str(pretrained_tokenizers / "no-eos"))
    assert pretrained_eos_token(no_eos, "[SEP]") == "[SEP]"
    with pytest.raises(ConfigError) as error:
        pretrained_eos_token(no_eos, "<|endoftext|>")
    message = str(error.value)
    assert message.startswith("tokenize.eos_token: ") and "\n" not in message
    assert "has no EOS token and '<|endoftext|>' is not in its vocabulary; set tokenize.eos_token" in message
    assert "[SEP]" in message  # the tokens to choose from
    with pytest.raises(ConfigError, match=r"^tokenize.eos_token: .* has no EOS token to end documents with"):
        eos_id(no_eos)
    with pytest.raises(ConfigError, match=r"^tokenize.eos_token: '</s>' is not in the vocabulary of"):
        eos_id(no_eos, "</s>")


def test_a_tokenizer_with_code_of_its_own_loads_only_when_trusted(
    custom_code_tokenizer, documents: list[str], tmp_path: Path
) -> None:
    """Never a question on the terminal: off, the folder is refused in one line and its code never
    imported; on, its class is the tokenizer."""
    marker = tmp_path / "ran"
    folder = custom_code_tokenizer(tmp_path / "tok", documents[:200], marker).folder
    refusal = r"holds custom code \(tokenizer_config.json: tokenization_marker.MarkerTokenizerFast\) that"
    with pytest.raises(ConfigError, match=rf"^tokenize.tokenizer: folder .*tok {refusal}") as refused:
        load_pretrained(str(folder), tmp_path / "model_cache", hub_timeout_s=0.1)
    assert "set model.trust_remote_code: true if you trust it" in str(refused.value)
    with pytest.raises(ConfigError, match=rf"^.*tok {refusal}.*set model.trust_remote_code: true"):
        load_tokenizer_folder(folder, "tokenizer")
    assert not marker.exists()
    tokenizer = load_pretrained(str(folder), tmp_path / "model_cache", 0.1, trust_remote_code=True)
    assert type(tokenizer).__name__ == "MarkerTokenizerFast" and marker.exists()


@pytest.mark.parametrize("kind", ["trained-bpe", *TOKENIZER_KINDS])
def test_a_saved_folder_loads_as_auto_tokenizer_loads_it(
    kind: str, documents: list[str], pretrained_tokenizers: Path, tmp_path: Path
) -> None:
    """The tokenizer stage's folder (``save_pretrained`` of what it trained or loaded) gives the same
    class, definition, special tokens and ids through ``load_tokenizer_folder`` as through
    ``AutoTokenizer``, whichever way the loader takes."""
    made = (
        train_bpe(iter(documents), CONFIG)
        if kind == "trained-bpe"
        else AutoTokenizer.from_pretrained(str(pretrained_tokenizers / kind))
    )
    made.save_pretrained(str(tmp_path / "tokenizer"))
    ours = load_tokenizer_folder(tmp_path / "tokenizer", "tokenizer")
    auto = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    assert type(ours) is type(auto)
    assert tokenizer_json(ours) == tokenizer_json(auto)
    assert ours.special_tokens_map == auto.special_tokens_map
    assert len(ours) == len(auto)
    for text in [*PROBE_TEXTS, *documents[:20]]:
        assert ours(text)["input_ids"] == auto(text)["input_ids"]


def test_the_trained_bpe_loads_without_torch(token_dir: Path) -> None:
    """Loading the trained BPE's folder imports neither torch nor the model classes: a tokenize stage
    starts in about a second, not seven."""
    probe = (
        "import sys; from pathlib import Path; from src.data.tokenizer_setup import load_tokenizer_folder; "
        f"load_tokenizer_folder(Path({str(token_dir / 'tokenizer')!r}), 'tokenizer'); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
