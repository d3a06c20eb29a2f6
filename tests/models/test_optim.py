"""The learning-rate schedule and the weight-decay groups."""

from __future__ import annotations

import itertools

import pytest
from torch import nn

from src.models.optim import decay_groups, warmup_cosine


def test_warmup_then_cosine_down_to_the_floor() -> None:
    lrs = [warmup_cosine(s, warmup_steps=10, max_steps=110, min_lr_ratio=0.1) for s in range(111)]
    warmup, decay = lrs[:10], lrs[10:]
    assert all(a < b for a, b in itertools.pairwise(warmup))  # rises linearly
    assert warmup[0] == pytest.approx(1 / 11) and decay[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(decay))  # then only falls
    assert decay[50] == pytest.approx(0.55)  # half way down the cosine
    assert lrs[110] == pytest.approx(0.1) and min(lrs) >= 0.0


def test_only_matrices_are_decayed() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    decay, keep = decay_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert [tuple(p.shape) for p in decay["params"]] == [(10, 4), (4, 4)]
    assert sorted(tuple(p.shape) for p in keep["params"]) == [(4,), (4,), (4,)]
