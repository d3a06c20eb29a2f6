"""Perplexity: exp(loss), finite even for a diverged run."""

from __future__ import annotations

import math

import pytest

from src.models.metrics import MAX_LOSS_FOR_PERPLEXITY, perplexity


def test_perplexity_is_exp_of_the_loss() -> None:
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(600)) == pytest.approx(600)


def test_a_diverged_loss_still_gives_a_finite_number() -> None:
    capped = math.exp(MAX_LOSS_FOR_PERPLEXITY)
    assert MAX_LOSS_FOR_PERPLEXITY == 700.0
    assert perplexity(700.0) == capped and perplexity(1e6) == capped and math.isfinite(capped)
    assert perplexity(math.inf) == capped
