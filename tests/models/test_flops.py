"""FLOPs per token against a count by hand, and MFU from its parts."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from src.models.flops import device_peak_tflops, flops_per_token, matmul_parameters, utilization


def tiny_gpt2(tie: bool = True) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=100, n_positions=32, n_embd=64, n_layer=2, n_head=4, tie_word_embeddings=tie
    )
    return GPT2LMHeadModel(config)


def test_flops_per_token_of_a_gpt2_equal_a_count_by_hand() -> None:
    d, layers, vocab, context = 64, 2, 100, 32
    per_layer = (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 2 * (2 * d)
    matmul = layers * per_layer + 2 * d + vocab * d  # final layer norm, and the (tied) head once
    assert matmul_parameters(tiny_gpt2()) == matmul
    assert flops_per_token(tiny_gpt2(), context) == 6 * matmul + 12 * layers * d * context


def test_an_untied_head_is_counted_once_and_the_lookups_never() -> None:
    tied, untied = tiny_gpt2(tie=True), tiny_gpt2(tie=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert matmul_parameters(untied) == matmul_parameters(tied)


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA GH200 480GB", 989.0),
        ("NVIDIA A100-SXM4-40GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
        ("Tesla T4", None),
    ],
)
def test_peak_of_known_devices_by_their_cuda_name(name: str, peak: float | None) -> None:
    assert device_peak_tflops(name) == peak


def test_utilization_is_achieved_over_peak_times_devices() -> None:
    # 400k tokens/s at 1 GFLOP per token is 400 TFLOP/s: 40% of one 1000-TFLOP/s device, 20% of two.
    assert utilization(400_000, 10**9, 1000.0) == pytest.approx(0.4)
    assert utilization(400_000, 10**9, 1000.0, devices=2) == pytest.approx(0.2)


def test_a_model_without_attention_heads_has_no_attention_term() -> None:
    from transformers import MambaConfig

    from src.models.flops import attention_width

    assert attention_width(MambaConfig(hidden_size=64, num_hidden_layers=2)) == 0
    assert attention_width(GPT2Config(n_embd=64, n_head=4)) == 64
