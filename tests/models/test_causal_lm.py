"""The model learns: a tiny GPT-2 overfits one batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.config import ModelConfig, TrainConfig
from src.errors import ConfigError, PipelineError
from src.models.causal_lm import CausalLM, Vocabulary, build_model
from src.models.optim import build_optimizer


def test_tiny_model_overfits_one_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vocab = Vocabulary(size=50, eos_id=0)
    model = build_model(
        ModelConfig(n_layer=2, n_head=2, n_embd=16), vocab, max_length=16, model_cache=tmp_path
    )
    assert model.config.eos_token_id == model.config.bos_token_id == model.config.pad_token_id == 0
    assert model.config.n_positions == 16 and model.config.vocab_size == 50
    module = CausalLM(model, TrainConfig(max_steps=150, warmup_steps=5))
    batch = torch.randint(1, 50, (4, 16))
    optimizer, schedule = build_optimizer(
        model, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.95), warmup_steps=5, max_steps=150, min_lr_ratio=1.0
    )
    first = None
    for _ in range(150):
        loss = module(batch, batch).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    assert first > 3.5  # about ln(50) at random init
    assert loss.item() < 0.2


def test_pretrained_model_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import src.utils.hub as hub

    monkeypatch.setattr(hub, "use_offline_hub", lambda: None)  # keep this test process online
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        PipelineError, match=r"model.pretrained: the Hugging Face Hub \(.*\) is unreachable and 'gpt2'"
    ):
        build_model(ModelConfig(pretrained="gpt2"), Vocabulary(50, 0), 16, tmp_path)


def test_pretrained_model_from_a_folder(tmp_path: Path) -> None:
    model = build_model(ModelConfig(n_layer=1, n_head=1, n_embd=8), Vocabulary(40, 0), 16, tmp_path)
    model.save_pretrained(tmp_path / "mine")
    loaded = build_model(ModelConfig(pretrained=str(tmp_path / "mine")), Vocabulary(40, 0), 16, tmp_path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    with pytest.raises(
        ConfigError,
        match=r"^model.pretrained: '.*mine' has fewer embeddings than the tokenizer's 50 tokens; "
        r"tokenize with its own tokenizer$",
    ):
        build_model(ModelConfig(pretrained=str(tmp_path / "mine")), Vocabulary(50, 0), 16, tmp_path)


def test_compiled_module_still_saves_plain_weights(tmp_path: Path) -> None:
    model = build_model(ModelConfig(n_layer=1, n_head=1, n_embd=8), Vocabulary(40, 0), 16, tmp_path)
    plain = CausalLM(model, TrainConfig(compile=False)).state_dict()
    compiled = CausalLM(model, TrainConfig(compile=True)).state_dict()
    assert list(compiled) == list(plain)
    assert all(key.startswith("model.") and "_orig_mod" not in key for key in compiled)
