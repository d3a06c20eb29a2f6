"""AdamW with weight-decay groups and a warmup + cosine schedule, as in nanoGPT and litgpt."""

from __future__ import annotations

import math

import torch
from torch import nn


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear and embedding weights); never biases or normalisation gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    keep = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def warmup_cosine(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear from 0 to 1 over ``warmup_steps``, then cosine down to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    warmup_steps: int,
    max_steps: int,
    min_lr_ratio: float,
    fused: bool = False,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """``fused``: one kernel for every parameter's update (nanoGPT, llm.c and litgpt train so); the
    gradients must then be clipped by :func:`clip_gradient_norm`: Lightning's mixed-precision plugins
    refuse to clip for it."""
    optimizer = torch.optim.AdamW(
        decay_groups(model, weight_decay), lr=lr, betas=betas, **({"fused": True} if fused else {})
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(
            step, warmup_steps=warmup_steps, max_steps=max_steps, min_lr_ratio=min_lr_ratio
        ),
    )
    return optimizer, schedule


def use_fused(setting: str | bool, device: torch.device, scaled_clipping: bool = False) -> bool:
    """``train.fused_optimizer`` on ``device``: ``auto`` is fused on CUDA only (the CPU keeps the
    loop kernels, so CPU runs stay bitwise what they were), and not when ``scaled_clipping``: under
    16-mixed the gradient scaler leaves a fused optimizer's gradients scaled until its own step, so
    a clip before it would read scaled norms (the config refuses ``true`` there)."""
    return device.type == "cuda" and not scaled_clipping if setting == "auto" else bool(setting)


def clip_gradient_norm(root: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``optimizer``'s parameters to a total norm of at most ``max_norm``.

    The same call as Lightning's own clipping (the parameters in the optimizer's order), so results are
    bitwise Lightning's; but it works with a fused optimizer too. A sharded ``root`` (FSDP) clips over
    all shards with its own ``clip_grad_norm_``; a plain norm of the local shard would be wrong."""
    sharded = getattr(root, "clip_grad_norm_", None)
    if callable(sharded):
        return sharded(max_norm)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return torch.nn.utils.clip_grad_norm_(params, max_norm)
