"""New models of transformers families: built from model.*, refused in one line, trained end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from src.config import ModelConfig, load_params
from src.errors import ConfigError
from src.models.architectures import TESTED_FAMILIES, gated_mlp_width, new_model_config
from src.models.causal_lm import Vocabulary, build_model
from src.train.fit import fit
from src.train.outputs import inference_tokenizer, model_context

#: The pretrained tokenizer fixtures and the family each is paired with, as their models are.
STYLES = {"gpt2": "gpt2", "llama": "llama"}


def test_the_families_map_the_common_settings_onto_their_own_names() -> None:
    for family in ("gpt2", "llama", "qwen2", "mistral"):
        config = new_model_config(
            ModelConfig(architecture=family, n_layer=3, n_head=2, n_embd=64), 500, 7, 32
        )
        assert (config.num_hidden_layers, config.num_attention_heads, config.hidden_size) == (3, 2, 64)
        assert (config.vocab_size, config.eos_token_id) == (500, 7)
        assert config.tie_word_embeddings


def test_model_config_sets_anything_the_family_has_and_overrides_the_common_settings() -> None:
    config = new_model_config(
        ModelConfig(architecture="llama", config={"num_key_value_heads": 2, "rope_theta": 500000.0}),
        500,
        7,
        32,
    )
    assert (config.num_key_value_heads, config.rope_parameters["rope_theta"]) == (2, 500000.0)


def test_a_gated_mlp_has_the_parameters_of_gpt2s_mlp() -> None:
    width = 768
    assert abs(3 * width * gated_mlp_width(width) - 2 * width * 4 * width) / (8 * width * width) < 0.01


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"architecture": "gpt3"}, r"model\.architecture: 'gpt3' is not a causal-LM architecture"),
        (
            {"architecture": "llama", "config": {"n_inner": 10}},
            r"model\.config\.n_inner: not a setting of the llama",
        ),
        (
            {"architecture": "llama", "config": {"num_kv_heads": 2}},
            r"model\.config\.num_kv_heads: not a setting",
        ),
        ({"architecture": "llama", "config": {"num_attention_heads": 3}}, r"model: the llama config refuses"),
        ({"architecture": "qwen2", "config": {"hidden_act": 5}}, r"model: the qwen2 config refuses"),
        (  # a composite config: the size and the vocabulary would be silently left at its defaults
            {"architecture": "gemma3"},
            r"model\.architecture: the gemma3 config has no vocab_size, hidden_size, num_hidden_layers",
        ),
    ],
)
def test_settings_a_family_refuses_are_one_line(model: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        new_model_config(ModelConfig(**model), 500, 7, 32)
    assert "\n" not in str(refused.value)


def test_new_models_attend_through_sdpa(tmp_path: Path) -> None:
    model = build_model(ModelConfig(architecture="llama"), Vocabulary(500, 7), 32, tmp_path)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("family", TESTED_FAMILIES)
def test_the_eos_token_learns_from_the_input_side_in_every_family(family: str, tmp_path: Path) -> None:
    """EOS separates the documents: a pad token equal to it would be the Llama-style families'
    padding_idx, an embedding row that starts at zero and that no input gradient reaches."""
    config = ModelConfig(architecture=family, n_layer=1, n_head=2, n_embd=16)
    if family != "gpt2":  # untied: the input embedding learns from its inputs alone
        config = dataclasses.replace(config, config={"tie_word_embeddings": False})
    eos = 7
    model = build_model(config, Vocabulary(50, eos), 16, tmp_path)
    embedding = model.get_input_embeddings()
    assert model.config.pad_token_id is None and embedding.padding_idx is None
    assert model.generation_config.pad_token_id == eos  # generate() still pads with EOS
    assert embedding.weight[eos].norm() > 0
    batch = torch.tensor([[1, 2, eos, 3, 4, eos, 5, 6]])
    model(input_ids=batch, labels=batch).loss.backward()
    assert embedding.weight.grad[eos].norm() > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        {"architecture": "llama"},
        {"architecture": "qwen2", "config": {"tie_word_embeddings": False}},
        {"architecture": "mistral", "config": {"num_key_value_heads": 1}},
    ],
    ids=["llama", "qwen2-untied", "mistral-gqa"],
)
def test_each_family_trains_saves_reloads_and_generates(make_params, model: dict, tmp_path: Path) -> None:
    params = load_params(make_params(tmp_path, model=model))
    metrics = fit(params, root=tmp_path)
    assert metrics["val_perplexity"] < 600  # beats a uniform guess over the tiny corpus's vocabulary

    reloaded = AutoModelForCausalLM.from_pretrained(params.paths.model_dir)
    assert reloaded.config.model_type == model["architecture"]
    tied = model.get("config", {}).get("tie_word_embeddings", True)
    shares = (
        reloaded.get_output_embeddings().weight.data_ptr()
        == reloaded.get_input_embeddings().weight.data_ptr()
    )
    assert shares == tied
    tokenizer = AutoTokenizer.from_pretrained(params.paths.model_dir)
    prompt = tokenizer("In the beginning", return_tensors="pt")
    assert reloaded.generation_config.pad_token_id == tokenizer.eos_token_id  # no pad_token_id needed
    with torch.no_grad():
        out = reloaded.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 5


@pytest.mark.parametrize(
    ("kind", "family", "bos"),
    [
        ("gpt2", "gpt2", "<|endoftext|>"),
        ("llama", "llama", "<s>"),
        ("llama", "gpt2", "<s>"),
        ("no-unk", "llama", None),
    ],
)
def test_a_new_model_begins_with_the_tokenizers_own_bos(
    pretrained_tokenizers: Path, kind: str, family: str, bos: str | None, tmp_path: Path
) -> None:
    """A SentencePiece-style tokenizer begins with ``<s>`` (id 1), not with its EOS ``</s>`` (2); GPT-2's
    BOS is its EOS; a tokenizer without a BOS begins with EOS. The model config still has no pad id."""
    tokenizer = AutoTokenizer.from_pretrained(str(pretrained_tokenizers / kind))
    assert tokenizer.bos_token == bos
    vocab = Vocabulary(len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id)
    model = build_model(ModelConfig(architecture=family, n_layer=1, n_head=2, n_embd=16), vocab, 16, tmp_path)
    expected = tokenizer.eos_token_id if bos is None else tokenizer.convert_tokens_to_ids(bos)
    assert (model.config.bos_token_id, model.config.eos_token_id) == (expected, tokenizer.eos_token_id)
    assert (model.generation_config.bos_token_id, model.generation_config.eos_token_id) == (
        expected,
        tokenizer.eos_token_id,
    )
    assert model.config.pad_token_id is None and model.get_input_embeddings().padding_idx is None
    if kind == "llama":
        assert (model.config.bos_token_id, model.config.eos_token_id) == (1, 2)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "no-eos"])
def test_the_saved_tokenizer_pads_batches_for_generation(
    pretrained_tokenizers: Path, kind: str, tmp_path: Path
) -> None:
    """A copy (the tokens' tokenizer is left as it is) that knows the context and pads on the left, with
    its own pad token, else EOS; the same input saves the same bytes."""
    tokenizer = AutoTokenizer.from_pretrained(str(pretrained_tokenizers / kind))
    if kind == "no-eos":  # as the tokenizer stage settles it (tokenize.eos_token)
        tokenizer.eos_token = "[SEP]"
    own_pad, own_length = tokenizer.pad_token, tokenizer.model_max_length
    for name in ("one", "two"):
        inference_tokenizer(tokenizer, 32).save_pretrained(str(tmp_path / name))
    assert (tokenizer.pad_token, tokenizer.model_max_length) == (own_pad, own_length)
    one, two = (
        {p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())} for name in ("one", "two")
    )
    assert one == two
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "one"))
    assert saved.model_max_length == 32 and saved.padding_side == "left"
    assert saved.pad_token == (own_pad or tokenizer.eos_token)
    batch = saved(["a", "longer text"], padding=True)
    assert len(batch["input_ids"][0]) == len(batch["input_ids"][1]) and batch["attention_mask"][0][0] == 0


def test_the_saved_tokenizer_knows_the_context_of_the_model(tiny_params, tmp_path: Path) -> None:
    """``train.max_length`` for a new model; a pretrained model's own when it is fine-tuned."""
    config = ModelConfig(architecture="gpt2", n_layer=1, n_head=2, n_embd=16)
    new = build_model(config, Vocabulary(50, 0), tiny_params.train.max_length, tmp_path)
    assert model_context(tiny_params, new) == tiny_params.train.max_length == 32
    pretrained = build_model(config, Vocabulary(50, 0), 256, tmp_path)  # GPT-2's n_positions
    fine_tuned = dataclasses.replace(
        tiny_params, model=dataclasses.replace(tiny_params.model, pretrained="x")
    )
    assert model_context(fine_tuned, pretrained) == 256
    llama = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=16), Vocabulary(50, 0), 128, tmp_path)
    assert model_context(fine_tuned, llama) == 128  # max_position_embeddings


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(STYLES))
def test_the_model_folder_generates_for_a_padded_batch(
    make_params, pretrained_tokenizers: Path, kind: str, tmp_path: Path
) -> None:
    """The model folder as users load it: AutoModelForCausalLM + AutoTokenizer, a batch of prompts of
    different lengths padded in one call, and generate(); the short prompt continues as it does alone."""
    from src.data.tokenize_corpus import tokenize_export

    params_file = make_params(tmp_path, data="export", model={"architecture": STYLES[kind]})
    settings = yaml.safe_load(params_file.read_text())
    settings["tokenize"]["tokenizer"] = f"{kind}-style"
    params_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    params = load_params(params_file)
    tokenizer = AutoTokenizer.from_pretrained(str(pretrained_tokenizers / kind))
    token_dir = params.paths.token_dir(params.tokenize.tokenizer, "kjv")
    tokenize_export(
        params.paths.raw_dir() / "kjv",
        token_dir,
        tokenizer,
        name=f"{kind}-style",
        kind="pretrained",
        threads=2,
    )
    fit(params, root=tmp_path)

    model = AutoModelForCausalLM.from_pretrained(params.paths.model_dir)
    saved = AutoTokenizer.from_pretrained(params.paths.model_dir)
    assert saved.model_max_length == params.train.max_length
    assert (saved.pad_token, saved.pad_token_id) == (tokenizer.eos_token, tokenizer.eos_token_id)
    assert model.config.pad_token_id is None  # pad = EOS would make EOS the embedding's padding_idx
    batch = saved(["a", "longer text"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False)
        alone = model.generate(**saved(["a"], return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 5)
    assert out[0, -5:].tolist() == alone[0, -5:].tolist()
