"""Training and validation windows cut from a memory-mapped token stream at load time.

The block length (``max_length``) is a training parameter: changing it never
re-tokenizes. The training order is a pure function of (seed, epoch, position),
so a resumed run sees exactly the batches it would have seen, and each rank of a
distributed run reads its own distinct windows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

IGNORE_INDEX = -100  # labels with this value are left out of the loss (Hugging Face convention)


def _as_tensor(window: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(window.astype(np.int64))  # (T,)


class TokenWindows(Dataset):
    """Windows of ``max_length`` tokens starting at the index the sampler gives.

    Labels equal the inputs: ``transformers`` causal LMs shift them internally.
    """

    def __init__(self, tokens: np.ndarray, max_length: int) -> None:
        if len(tokens) < 2 * max_length:
            raise ValueError(f"{len(tokens)} tokens are too few for windows of {max_length}")
        self.tokens = tokens
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.tokens) - self.max_length + 1

    def __getitem__(self, start: int) -> dict[str, torch.Tensor]:
        window = _as_tensor(self.tokens[start : start + self.max_length])
        return {"input_ids": window, "labels": window.clone()}


def windows_per_epoch(num_tokens: int, max_length: int) -> int:
    """Windows in one epoch: the same for every epoch, whatever its grid offset."""
    return num_tokens // max_length - 1


def epoch_window_starts(num_tokens: int, max_length: int, seed: int, epoch: int) -> np.ndarray:
    """Start indices of one epoch's training windows, in training order.

    Each epoch shifts the window grid by a seeded offset below ``max_length`` (so
    the model does not always see the same cut points) and shuffles the windows;
    both depend only on (seed, epoch).
    """
    rng = np.random.default_rng([seed, epoch])
    offset = int(rng.integers(max_length))
    return offset + rng.permutation(windows_per_epoch(num_tokens, max_length)) * max_length  # (count,)


class WindowSampler(Sampler[int]):
    """This rank's window starts over consecutive epochs, from any position of the stream.

    Position ``p`` of a rank is window ``p % n`` of epoch ``p // n`` (``n`` windows
    per rank and epoch), so the order is a pure function of (seed, epoch,
    position): a resumed run passes the windows already consumed as ``start``
    and sees exactly what it would have seen. Ranks take interleaved windows of
    the same epoch order, so they never read the same window.
    """

    def __init__(
        self,
        num_tokens: int,
        max_length: int,
        seed: int,
        *,
        start: int = 0,
        length: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_tokens, self.max_length, self.seed = num_tokens, max_length, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = windows_per_epoch(num_tokens, max_length) // world_size
        if self.per_rank < 1:
            raise ValueError(
                f"{num_tokens} tokens give no window of {max_length} per rank for {world_size} ranks"
            )
        self.start = start
        self.length = self.per_rank if length is None else length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        position, end = self.start, self.start + self.length
        while position < end:
            epoch, index = divmod(position, self.per_rank)
            starts = epoch_window_starts(self.num_tokens, self.max_length, self.seed, epoch)
            stop = min(self.per_rank, index + end - position)
            yield from starts[
                self.rank + index * self.world_size : self.rank + stop * self.world_size : self.world_size
            ].tolist()
            position += stop - index


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

    def padded(self, rank: int, world_size: int) -> range:
        """This rank's window indices, as many on every rank: in distributed validation each
        forward pass is a collective step, so uneven shards would leave one rank waiting forever.
        Indices past the end are padding windows that score no token."""
        per_rank = -(-self.count // world_size)
        return range(rank, per_rank * world_size, world_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index >= self.count:  # padding: a real window whose labels are all ignored
            window = _as_tensor(self.tokens[: self.max_length])
            return {"input_ids": window, "labels": torch.full_like(window, IGNORE_INDEX)}
        start = min(index * self.stride, len(self.tokens) - self.max_length)
        window = _as_tensor(self.tokens[start : start + self.max_length])
        labels = window.clone()
        # Tokens up to index * stride were predicted by the windows before (the first one by none).
        labels[: index * self.stride - start + 1] = IGNORE_INDEX
        return {"input_ids": window, "labels": labels}
