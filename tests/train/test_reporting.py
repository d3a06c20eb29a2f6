"""The unigram baseline: the token distribution training draws from, scored on the validation text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src.train.reporting import unigram_nats


def test_one_source_is_its_add_one_smoothed_frequencies() -> None:
    train, val = np.array([0, 0, 1], dtype=np.uint16), np.array([0, 2], dtype=np.uint16)
    counts = np.array([3, 2, 1]) / 6  # add-one over a vocabulary of 3
    (nats,) = unigram_nats([train], [val], 3)
    assert nats == pytest.approx(-math.log(counts[0]) - math.log(counts[2]))


def test_sources_are_mixed_by_weight_and_a_zero_weight_counts_for_nothing() -> None:
    a, b = np.array([0] * 9, dtype=np.uint16), np.array([1] * 99, dtype=np.uint16)
    val = [np.array([0], dtype=np.uint16), np.array([1], dtype=np.uint16)]
    p_a, p_b = np.array([10, 1]) / 11, np.array([1, 100]) / 101  # each source's own, add-one
    mixed = 0.75 * p_a + 0.25 * p_b  # by weight, not by the sources' sizes (b is 11 times larger)
    assert unigram_nats([a, b], val, 2, [0.75, 0.25]) == pytest.approx([-math.log(p) for p in mixed])
    assert unigram_nats([a, b], val, 2, [1.0, 0.0]) == pytest.approx([-math.log(p) for p in p_a])
