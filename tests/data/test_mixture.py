"""The mixture schedule: shares that follow the weights at every point, as a pure function of position."""

from __future__ import annotations

import numpy as np
import pytest

from src.data.mixture import BLOCK, MixtureSchedule, mixture_weights
from src.errors import ConfigError


@pytest.mark.parametrize(
    "weights", [[1.0], [0.7, 0.3], [0.5, 0.25, 0.25], [0.98, 0.01, 0.01], [0.0, 1.0, 2.0]]
)
def test_counts_follow_the_weights_and_never_decrease(weights: list[float]) -> None:
    schedule = MixtureSchedule(weights, seed=0)
    share = np.asarray(weights) / sum(weights)
    previous = np.zeros(len(weights), dtype=np.int64)
    for n in range(0, 50 * BLOCK + 1, BLOCK // 2):
        counts = schedule.counts(n)
        assert counts.sum() == n and (counts >= previous).all()
        assert (np.abs(counts - share * n) <= len(weights) - 1 + 1e-9).all()
        previous = counts


def test_each_source_index_is_used_once_in_order() -> None:
    schedule = MixtureSchedule([0.6, 0.4], seed=3)
    sources, within = schedule.locate(np.arange(10 * BLOCK))
    for source in (0, 1):
        assert within[sources == source].tolist() == list(range(int((sources == source).sum())))
    again = MixtureSchedule([0.6, 0.4], seed=3).locate(np.arange(5 * BLOCK, 7 * BLOCK))
    assert np.array_equal(again[0], sources[5 * BLOCK : 7 * BLOCK])  # a pure function of position
    other = MixtureSchedule([0.6, 0.4], seed=4).locate(np.arange(BLOCK))[0]
    assert not np.array_equal(other, sources[:BLOCK])  # the seed shuffles the sources apart


def test_weights_default_to_tokens_and_are_normalised() -> None:
    assert mixture_weights(["a", "b"], [300, 100], {}) == [0.75, 0.25]
    assert mixture_weights(["a", "b"], [300, 100], {"a": 1, "b": 3}) == [0.25, 0.75]
    with pytest.raises(ConfigError, match="every weight is 0"):
        mixture_weights(["a"], [10], {"a": 0})
