"""The causal-LM loss computed a slice of tokens at a time, so the full logits never exist at once.

With a large vocabulary the LM head's output dominates memory: a batch of 16 x
1024 tokens over GPT-2's 50,257 tokens is 3.3 GB of fp32 logits, with as much
again for their gradient. Here the head and the cross-entropy run on
``chunk_tokens`` tokens at a time under activation checkpointing: the forward pass
keeps only each slice's summed loss, and the backward pass recomputes one slice's
logits at a time (one more head matmul in exchange for the memory). The result
equals the plain loss to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from src.data.windows import IGNORE_INDEX

#: Config attributes of architectures that transform the logits after the head (soft-capping, scaling):
#: the plain head-and-cross-entropy here would compute another loss for them.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling")


def unsupported_reason(model: nn.Module) -> str | None:
    """Why the chunked loss would not equal ``model``'s own loss, or None when it does."""
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear) or head.bias is not None:
        return "its LM head is not a plain linear layer without bias"
    for name in LOGIT_TRANSFORMS:
        if getattr(model.config, name, None) not in (None, 1, 1.0):
            return f"it transforms its logits ({name})"
    return None


def _slice_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = (hidden @ weight.t()).float()  # upcast as transformers does before the cross-entropy
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_causal_lm_loss(
    hidden: torch.Tensor, head_weight: torch.Tensor, labels: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """Mean next-token cross-entropy of ``hidden`` (B, T, d) through ``head_weight`` (V, d) against
    ``labels`` (B, T), shifted as transformers shifts them: position t predicts label t + 1."""
    width = hidden.shape[-1]
    states = hidden[:, :-1].reshape(-1, width)
    targets = labels[:, 1:].reshape(-1)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.numel(), chunk_tokens):
        piece = slice(start, start + chunk_tokens)
        total = total + checkpoint(
            _slice_loss_sum, states[piece], head_weight, targets[piece], use_reentrant=False
        )
    return total / (targets != IGNORE_INDEX).sum()
