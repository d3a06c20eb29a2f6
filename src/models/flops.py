"""Model FLOPs per token and model FLOPs utilization (MFU), the figure that compares training speed
across models and devices.

The count is the convention of the PaLM paper (appendix B) that nanoGPT uses:
``6 N + 12 L d T`` per trained token, where

- ``N`` counts the parameters that take part in a matrix multiply: every weight
  except the embedding lookups (token and position), with the LM head counted
  once whether or not it shares its matrix with the token embedding;
- ``12 L d T`` is attention's score and value products (``L`` layers, ``d`` = heads
  x head size, ``T`` the context), forward and backward, not halved for the causal
  mask;
- the factor 6 is one multiply-add (2 FLOPs) forward and two backward.

MFU divides the achieved model FLOP/s by the device's dense bf16 peak, whatever
``train.precision`` is (as nanoGPT and PaLM report it), so a run in fp32 shows how
much it leaves on the table.
"""

from __future__ import annotations

from torch import nn

#: Dense (no sparsity) bf16 peak TFLOP/s per device, from the vendors' datasheets. Longest name first
#: wins, so "H100 PCIe" is not read as an SXM H100. train.peak_tflops overrides the table.
PEAK_BF16_TFLOPS: dict[str, float] = {
    "A100": 312.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "GH200": 989.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
}


def matmul_parameters(model: nn.Module) -> int:
    """Parameters that are multiplied per token: all but the embedding lookups, plus the LM head once."""
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    counted = sum(p.numel() for p in model.parameters() if id(p) not in lookups)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and id(head.weight) in lookups:  # tied: the head's matrix is the token embedding's
        counted += head.weight.numel()
    return counted


def attention_width(config: object) -> int:
    """Heads x head size: the width of the attention products (the hidden size for GPT-2 and most);
    0 for a model without attention heads (state-space and recurrent families)."""
    heads = getattr(config, "num_attention_heads", None)
    if not heads:
        return 0
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads * head_dim


def flops_per_token(model: nn.Module, context: int) -> int:
    """Training FLOPs per token of a ``transformers`` causal LM at ``context`` tokens (see the module)."""
    config = model.config
    layers = config.num_hidden_layers
    return 6 * matmul_parameters(model) + 12 * layers * attention_width(config) * context


def device_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known accelerator (by its CUDA name), or None."""
    for name in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if name.lower() in device_name.lower():
            return PEAK_BF16_TFLOPS[name]
    return None


def utilization(tokens_per_s: float, flops_per_token: int, peak_tflops: float, devices: int = 1) -> float:
    """MFU: the achieved model FLOP/s as a fraction of ``devices`` x the per-device peak."""
    return tokens_per_s * flops_per_token / (peak_tflops * 1e12 * devices)
