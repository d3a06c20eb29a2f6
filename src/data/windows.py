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


def epoch_window_starts(num_tokens: int, max_length: int, seed: int, epoch: int) -> np.ndarray:
    """Start indices of one epoch's training windows, in training order.

    Each epoch shifts the window grid by a seeded offset (so the model does not
    always see the same cut points) and shuffles the windows; both depend only
    on (seed, epoch).
    """
    rng = np.random.default_rng([seed, epoch])
    offset = int(rng.integers(max_length))
    count = (num_tokens - offset) // max_length
    return offset + rng.permutation(count) * max_length  # (count,)


class WindowSampler(Sampler[int]):
    """Yields this rank's window starts for the current epoch, from a resumable position."""

    def __init__(
        self,
        num_tokens: int,
        max_length: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_tokens, self.max_length, self.seed = num_tokens, max_length, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.position = 0  # windows of this rank already consumed in this epoch

    def _mine(self) -> np.ndarray:
        starts = epoch_window_starts(self.num_tokens, self.max_length, self.seed, self.epoch)
        usable = len(starts) - len(starts) % self.world_size  # every rank gets the same count
        return starts[self.rank : usable : self.world_size]

    def __len__(self) -> int:
        return len(self._mine()) - self.position

    def __iter__(self) -> Iterator[int]:
        mine, start = self._mine(), self.position
        self.position = 0  # the next epoch starts from its beginning
        return iter(mine[start:].tolist())

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch."""
        self.epoch = epoch

    def resume_at(self, epoch: int, position: int) -> None:
        """Continue from window ``position`` of ``epoch`` (e.g. batches done x batch size)."""
        self.epoch, self.position = epoch, position

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at(state["epoch"], state["position"])


class ValidationWindows(Dataset):
    """Fixed windows that cover every validation token exactly once.

    Windows are laid end to end; the last one is aligned to the end of the
    stream and its labels overlapping the previous window are ignored, so all
    windows have the same shape and no token is counted twice.
    """

    def __init__(self, tokens: np.ndarray, max_length: int) -> None:
        if len(tokens) < max_length:
            raise ValueError(f"{len(tokens)} validation tokens are too few for windows of {max_length}")
        self.tokens = tokens
        self.max_length = max_length
        self.count = -(-len(tokens) // max_length)  # ceil

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = min(index * self.max_length, len(self.tokens) - self.max_length)
        window = _as_tensor(self.tokens[start : start + self.max_length])
        labels = window.clone()
        labels[: index * self.max_length - start] = IGNORE_INDEX  # already scored by the previous window
        return {"input_ids": window, "labels": labels}
