"""Several token sources mixed by weight: which source each training window comes from.

The training stream is a sequence of global positions 0, 1, 2, ... (every rank's
windows of a step together). :class:`MixtureSchedule` maps a position to a
source and to an index in that source's own stream, as a pure function of
(weights, seed, position): a resumed run, or a run on another number of
workers with the same global batch, sees exactly the same windows.

How: positions come in blocks of :data:`BLOCK`. The first ``n`` positions hold
``floor(w * n)`` windows of each source but the heaviest, which takes the rest,
so every source's count is within a few windows of its weight at any point
(and never decreases from one block to the next). Inside a block the
sources' positions are shuffled by a generator seeded with (seed, block).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from src.errors import ConfigError

#: Positions per block of the schedule: the granularity of the shuffle between sources.
BLOCK = 1024
#: Added to the seed of the between-sources shuffle, so it is not the window order's generator.
_SHUFFLE_STREAM = 0x6D6978  # "mix"


def mixture_weights(
    names: Sequence[str], train_tokens: Sequence[int], mixture: Mapping[str, float]
) -> list[float]:
    """Normalised weights in the order of ``names``: ``mixture``'s, or proportional to tokens when empty."""
    raw = [float(mixture[name]) for name in names] if mixture else [float(t) for t in train_tokens]
    total = sum(raw)
    if total <= 0:
        raise ConfigError("train.mixture: every weight is 0; give at least one source a weight above 0")
    return [value / total for value in raw]


class MixtureSchedule:
    """Which source each global position draws from, and the index of that window in its source."""

    def __init__(self, weights: Sequence[float], seed: int, block: int = BLOCK) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or not len(w) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
        if block < len(w) * len(w):
            raise ValueError(f"a block of {block} positions is too small for {len(w)} sources")
        self.weights = w / w.sum()
        self.heaviest = int(np.argmax(self.weights))
        self.seed, self.block = seed, block
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None

    @property
    def sources(self) -> int:
        return len(self.weights)

    def counts(self, positions: int) -> np.ndarray:
        """Windows of each source among the first ``positions`` (non-decreasing in ``positions``).

        Each source but the heaviest takes ``floor(w * n)``; the heaviest takes the rest, within
        ``sources - 1`` of its share. Its count never decreases as long as ``w * block >= sources - 1``,
        which holds for the heaviest weight (>= 1/sources) since ``block >= sources ** 2``.
        """
        counts = np.floor(self.weights * positions).astype(np.int64)
        counts[self.heaviest] = 0
        counts[self.heaviest] = positions - counts.sum()
        return counts  # (sources,)

    def block_plan(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, index in that source's stream) of each position of block ``index``."""
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1], self._cached[2]
        before = self.counts(index * self.block)
        taken = self.counts((index + 1) * self.block) - before
        labels = np.repeat(np.arange(self.sources), taken)
        if self.sources > 1:
            labels = np.random.default_rng([self.seed, _SHUFFLE_STREAM, index]).permutation(labels)
        within = np.empty(self.block, dtype=np.int64)
        for source in range(self.sources):
            where = np.flatnonzero(labels == source)
            within[where] = before[source] + np.arange(len(where))
        self._cached = (index, labels, within)
        return labels, within  # (block,), (block,)

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source, index in the source's stream) of each of ``positions`` (ascending)."""
        sources = np.empty(len(positions), dtype=np.int64)
        within = np.empty(len(positions), dtype=np.int64)
        blocks = positions // self.block
        for block in np.unique(blocks):
            mask = blocks == block
            labels, index = self.block_plan(int(block))
            offsets = positions[mask] - block * self.block
            sources[mask], within[mask] = labels[offsets], index[offsets]
        return sources, within
