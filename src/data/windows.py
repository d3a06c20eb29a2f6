"""Training and validation windows cut from memory-mapped token streams at load time.

The block length (``max_length``) is a training parameter: changing it never
re-tokenizes. The training order is a pure function of (seed, position), so a
resumed run sees exactly the batches it would have seen, each rank of a
distributed run reads its own distinct windows, and the windows of a global
batch do not depend on the number of ranks. Several sources are mixed by weight
(:mod:`src.data.mixture`); each runs through its own epochs.
"""

from __future__ import annotations

import bisect
import logging
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from src.data.mixture import MixtureSchedule

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # labels with this value are left out of the loss (Hugging Face convention)
#: Training positions placed per pass of the sampler (the sources and epochs of a pass are vectorised).
_POSITIONS_PER_PASS = 1024


def _as_tensor(window: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(window.astype(np.int64))  # (T,)


def _source_offsets(sizes: Sequence[int]) -> list[int]:
    """Where each source starts in the sources laid end to end: a window start there names both."""
    return [0, *np.cumsum(sizes)[:-1].tolist()]


class TokenWindows(Dataset):
    """Windows of ``max_length`` tokens starting at the index the sampler gives.

    With several sources the index is into the sources laid end to end (``offsets``);
    a window never crosses from one source into the next. Labels equal the inputs:
    ``transformers`` causal LMs shift them internally.
    """

    def __init__(self, tokens: np.ndarray | Sequence[np.ndarray], max_length: int) -> None:
        self.parts = [tokens] if isinstance(tokens, np.ndarray) else list(tokens)
        for part in self.parts:
            if len(part) < 2 * max_length:
                raise ValueError(f"{len(part)} tokens are too few for windows of {max_length}")
        self.offsets = _source_offsets([len(part) for part in self.parts])
        self.max_length = max_length

    def __len__(self) -> int:
        return self.offsets[-1] + len(self.parts[-1]) - self.max_length + 1

    def __getitem__(self, start: int) -> dict[str, torch.Tensor]:
        source = bisect.bisect_right(self.offsets, start) - 1
        local = start - self.offsets[source]
        window = _as_tensor(self.parts[source][local : local + self.max_length])
        return {"input_ids": window, "labels": window.clone()}


def windows_per_epoch(num_tokens: int, max_length: int) -> int:
    """Windows in one epoch: the same for every epoch, whatever its grid offset."""
    return num_tokens // max_length - 1


def epoch_window_starts(
    num_tokens: int, max_length: int, seed: int, epoch: int, stream: int | None = None
) -> np.ndarray:
    """Start indices of one epoch's training windows, in training order.

    Each epoch shifts the window grid by a seeded offset below ``max_length`` (so
    the model does not always see the same cut points) and shuffles the windows;
    both depend only on (seed, epoch), and on ``stream`` (one per source of a mixture).
    """
    rng = np.random.default_rng([seed, epoch] if stream is None else [seed, epoch, stream])
    offset = int(rng.integers(max_length))
    return offset + rng.permutation(windows_per_epoch(num_tokens, max_length)) * max_length  # (count,)


class WindowSampler(Sampler[int]):
    """This rank's window starts, from any position of the (mixed) training stream.

    Global position ``g`` is placed by :class:`~src.data.mixture.MixtureSchedule`: a source,
    and an index ``i`` in that source's stream, which is window ``i % n`` of the source's epoch
    ``i // n`` (``n`` windows per epoch). Rank ``r`` of ``R`` reads positions ``r, r + R, ...``,
    so the ranks never read the same window and a step's global batch is the same windows
    whatever ``R``. A resumed run passes the windows this rank already consumed as ``start``.
    """

    def __init__(
        self,
        num_tokens: int | Sequence[int],
        max_length: int,
        seed: int,
        *,
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
        start: int = 0,
        length: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        """
        Args:
            num_tokens: tokens of each source's training split (one int for one source).
            weights: share of windows per source (default: proportional to ``num_tokens``).
            names: the sources' names, for the log and for each source's own window order.
        """
        sizes = [num_tokens] if isinstance(num_tokens, int) else [int(n) for n in num_tokens]
        self.names = list(names) if names is not None else [f"source {i}" for i in range(len(sizes))]
        self.sizes, self.max_length, self.seed = sizes, max_length, seed
        self.rank, self.world_size = rank, world_size
        self.windows = [windows_per_epoch(n, max_length) for n in sizes]
        per_rank = sum(self.windows) // world_size
        if per_rank < 1 or min(self.windows) < 1:
            raise ValueError(
                f"{min(sizes)} tokens give no window of {max_length} per rank for {world_size} ranks"
            )
        self.schedule = MixtureSchedule(weights if weights is not None else sizes, seed)
        self.offsets = _source_offsets(sizes)
        # One source keeps the order of a single stream; in a mixture each source's order is its own.
        self.streams = [None] if len(sizes) == 1 else [zlib.crc32(name.encode()) for name in self.names]
        self.start = start
        self.length = per_rank if length is None else length
        self._epochs: dict[int, tuple[int, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        position, end = self.start, self.start + self.length
        while position < end:
            stop = min(end, position + _POSITIONS_PER_PASS)
            sources, within = self.schedule.locate(np.arange(position, stop) * self.world_size + self.rank)
            starts = np.empty(len(sources), dtype=np.int64)
            for source in np.unique(sources).tolist():
                mask = sources == source
                epochs, index = np.divmod(within[mask], self.windows[source])
                chosen = np.empty(len(index), dtype=np.int64)
                for epoch in np.unique(epochs).tolist():
                    same = epochs == epoch
                    chosen[same] = self._epoch_starts(source, epoch)[index[same]]
                starts[mask] = self.offsets[source] + chosen
            yield from starts.tolist()
            position = stop

    def _epoch_starts(self, source: int, epoch: int) -> np.ndarray:
        """One epoch's window order of a source (the current epoch is kept)."""
        known = self._epochs.get(source)
        if known is not None and known[0] == epoch:
            return known[1]
        if known is not None and epoch > known[0] and self.rank == 0:
            log.info(
                "training data %s: all %s windows seen; epoch %d of it begins (the same windows, "
                "in a new order)",
                self.names[source],
                f"{self.windows[source]:,}",
                epoch + 1,
            )
        starts = epoch_window_starts(
            self.sizes[source], self.max_length, self.seed, epoch, self.streams[source]
        )
        self._epochs[source] = (epoch, starts)
        return starts


class ValidationWindows(Dataset):
    """Fixed windows that predict every validation token but the first exactly once.

    A causal LM predicts positions 1..T-1 of a window from the ones before, so
    windows overlap by one token: each starts on the last token of the previous
    one, which it only reads. The last window is aligned to the end of the stream
    and its labels for tokens already predicted are ignored, so all windows have
    the same shape and the summed loss covers the whole text (what bits per byte
    divides by its bytes).
    """

    def __init__(self, tokens: np.ndarray, max_length: int) -> None:
        if len(tokens) < max_length:
            raise ValueError(f"{len(tokens)} validation tokens are too few for windows of {max_length}")
        self.tokens = tokens
        self.max_length = max_length
        self.stride = max_length - 1
        self.count = max(1, -(-(len(tokens) - 1) // self.stride))  # ceil

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index >= self.count:  # padding (SourceValidation.batches): a real window scoring nothing
            window = _as_tensor(self.tokens[: self.max_length])
            return {"input_ids": window, "labels": torch.full_like(window, IGNORE_INDEX)}
        start = min(index * self.stride, len(self.tokens) - self.max_length)
        window = _as_tensor(self.tokens[start : start + self.max_length])
        labels = window.clone()
        # Tokens up to index * stride were predicted by the windows before (the first one by none).
        labels[: index * self.stride - start + 1] = IGNORE_INDEX
        return {"input_ids": window, "labels": labels}


class SourceValidation(Dataset):
    """The validation windows of several sources, in batches that never mix sources.

    Each item carries its source's index (``source``), so validation can sum the loss
    per source as well as over all of them.
    """

    PADDING = -1
    """The index of a padding window: it scores no token."""

    def __init__(self, sources: Sequence[np.ndarray], max_length: int) -> None:
        self.parts = [ValidationWindows(tokens, max_length) for tokens in sources]
        self.offsets = _source_offsets([len(part) for part in self.parts])

    def __len__(self) -> int:
        return self.offsets[-1] + len(self.parts[-1])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index == self.PADDING:
            source, local = 0, len(self.parts[0])  # ValidationWindows' own padding window
        else:
            source = bisect.bisect_right(self.offsets, index) - 1
            local = index - self.offsets[source]
        item = self.parts[source][local]
        item["source"] = torch.tensor(source)
        return item

    def batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
        """This rank's batches: each source's windows in order, as many batches on every rank.

        In distributed validation each forward pass is a collective step, so uneven shares would
        leave one rank waiting forever; the ranks with fewer get a padding batch.
        """
        batches = [
            list(range(offset + first, offset + min(first + batch_size, len(part))))
            for offset, part in zip(self.offsets, self.parts, strict=True)
            for first in range(0, len(part), batch_size)
        ]
        per_rank = -(-len(batches) // world_size)
        batches += [[self.PADDING]] * (per_rank * world_size - len(batches))
        return batches[rank::world_size]
