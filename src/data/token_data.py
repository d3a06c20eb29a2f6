"""Training and validation windows from a token folder, as a Lightning data module.

This module only reads: it memory-maps the token files the tokenize stage
wrote, after checking that they belong to the given tokenizer and are complete.
The train stage uses it as it is; the seed's
:class:`~src.data.data_manager.LightningDataModule` adds ``prepare_data`` (download
and tokenize when needed) on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from src.data.raw_export import TRAIN, VALIDATION
from src.data.token_files import check_tokenizer, open_tokens, read_token_manifest, verify_token_files
from src.data.tokenizer_setup import tokenizer_fingerprint
from src.data.windows import TokenWindows, ValidationWindows, WindowSampler
from src.errors import ConfigError


class TokenDataModule(L.LightningDataModule):
    """Seeded, resumable training windows and fixed validation windows over one token folder."""

    def __init__(
        self,
        token_dir: Path,
        tokenizer: Any,
        *,
        batch_size: int = 8,
        max_length: int = 128,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        """
        Args:
            token_dir: ``<cache_dir>/tokenized/<tokenizer>``, as the tokenize stage writes it.
            tokenizer: the tokenizer the tokens must have been made with.
            batch_size, max_length: per-device batch size and window length in tokens.
            seed: seed of the training window order (a pure function of seed, epoch, position).
            num_workers: data-loader worker processes.
        """
        super().__init__()
        if batch_size < 1 or max_length < 2:
            raise ConfigError(
                f"batch_size / max_length: expected >= 1 / >= 2, got {batch_size} / {max_length}"
            )
        self.token_dir = token_dir
        self.tokenizer = tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.seed, self.num_workers = seed, num_workers
        self.train_start = 0
        """Training windows this rank already consumed (set when resuming)."""
        self.train_length: int | None = None
        """Training windows to yield (default: one epoch)."""

    def setup(self, stage: str | None = None) -> None:
        """Memory-map the token files after checking they belong to this tokenizer and are complete."""
        manifest = read_token_manifest(self.token_dir)
        check_tokenizer(self.token_dir, manifest, tokenizer_fingerprint(self.tokenizer))
        verify_token_files(self.token_dir, manifest)  # hashed once per file, remembered after
        self.manifest = manifest
        self.train_tokens = open_tokens(self.token_dir, TRAIN, manifest)
        self.val_tokens = open_tokens(self.token_dir, VALIDATION, manifest)

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer  # set by Lightning when it runs this module; None in a notebook
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        sampler = WindowSampler(
            len(self.train_tokens),
            self.max_length,
            self.seed,
            start=self.train_start,
            length=self.train_length,
            rank=rank,
            world_size=world_size,
        )
        return DataLoader(
            TokenWindows(self.train_tokens, self.max_length),
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=True,
            generator=self._loader_generator(),
        )

    def val_dataloader(self) -> DataLoader:
        windows = ValidationWindows(self.val_tokens, self.max_length)
        rank, world_size = self._rank()
        return DataLoader(
            windows,
            batch_size=self.batch_size,
            sampler=windows.padded(rank, world_size),  # each rank scores its share; sums are reduced
            num_workers=self.num_workers,
            generator=self._loader_generator(),
        )

    def _loader_generator(self) -> torch.Generator:
        """A private generator for the loader's worker seeds: creating a loader then never
        consumes the global RNG, which dropout uses, so a resumed run draws the same numbers."""
        return torch.Generator().manual_seed(self.seed)
