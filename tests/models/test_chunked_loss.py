"""The chunked loss equals the model's own loss and gradients, and refuses models it would get wrong."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from src.config import TrainConfig
from src.data.windows import IGNORE_INDEX
from src.errors import ConfigError
from src.models.causal_lm import CausalLM
from src.models.chunked_loss import chunked_causal_lm_loss


def gpt2(vocab: int = 300) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0  # the two models must agree
    return GPT2LMHeadModel(config)


def batch(vocab: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 16), generator=generator)
    labels = ids.clone()
    labels[0, :5] = IGNORE_INDEX  # as validation windows mask what the previous window scored
    return ids, labels


@pytest.mark.parametrize("chunk", [1, 7, 45, 1000])
def test_chunked_loss_and_gradients_equal_the_models_own(chunk: int) -> None:
    ids, labels = batch()
    plain, chunked = gpt2(), gpt2()
    reference = CausalLM(plain, TrainConfig())(ids, labels).loss
    reference.backward()
    module = CausalLM(chunked, TrainConfig(loss_chunk_tokens=chunk))
    loss = module(ids, labels).loss
    loss.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-6)
    for (name, a), (_, b) in zip(plain.named_parameters(), chunked.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_chunked_loss_of_a_batch_scoring_nothing_is_nan_as_the_plain_one() -> None:
    hidden, weight = torch.randn(1, 4, 8), torch.randn(10, 8)
    labels = torch.full((1, 4), IGNORE_INDEX)
    assert torch.isnan(chunked_causal_lm_loss(hidden, weight, labels, 2))


def test_without_labels_the_model_still_returns_logits() -> None:
    ids, _ = batch()
    out = CausalLM(gpt2(), TrainConfig(loss_chunk_tokens=8))(ids)
    assert out.logits.shape == (3, 16, 300)


def test_a_model_that_scales_its_logits_is_refused_with_one_line() -> None:
    model = gpt2()
    model.config.logit_scale = 0.5
    with pytest.raises(ConfigError, match=r"train\.loss_chunk_tokens.*logit_scale.*set it to 0"):
        CausalLM(model, TrainConfig(loss_chunk_tokens=8))
