"""Training and validation windows from one or more token folders, as a Lightning data module.

This module only reads: it memory-maps the token files the tokenize stages
wrote, after checking that they belong to the given tokenizer and are complete.
The train stage uses it as it is; the workflow guide's
:class:`~src.data.data_manager.LightningDataModule` adds ``prepare_data`` (download
and tokenize when needed) on top.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from src.data.manifests import TokenManifest
from src.data.mixture import mixture_weights
from src.data.raw_export import TRAIN, VALIDATION
from src.data.token_files import (
    ValidationSources,
    check_tokenizer,
    open_tokens,
    read_token_manifest,
    verify_token_files,
)
from src.data.tokenizer_setup import tokenizer_fingerprint
from src.data.windows import SourceValidation, TokenWindows, WindowSampler
from src.errors import ConfigError


class TokenDataModule(L.LightningDataModule):
    """Seeded, resumable training windows mixed from one or more token folders, and fixed
    validation windows of each (batches never mix sources, so the loss is known per source)."""

    def __init__(
        self,
        token_dirs: Path | Mapping[str, Path],
        tokenizer: Any,
        *,
        weights: Mapping[str, float] | None = None,
        batch_size: int = 8,
        max_length: int = 128,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        """
        Args:
            token_dirs: ``{dataset: <cache_dir>/tokenized/<tokenizer>/<dataset>}`` as the tokenize stage
                writes them (one folder alone is named after the dataset in its manifest).
            tokenizer: the tokenizer the tokens must have been made with.
            weights: share of training windows per dataset (``train.mixture``); default proportional
                to their training tokens.
            batch_size, max_length: per-device batch size and window length in tokens.
            seed: seed of the training window order (a pure function of seed and position).
            num_workers: data-loader worker processes.
        """
        super().__init__()
        if batch_size < 1 or max_length < 2:
            raise ConfigError(
                f"batch_size / max_length: expected >= 1 / >= 2, got {batch_size} / {max_length}"
            )
        self.token_dirs = dict(token_dirs) if isinstance(token_dirs, Mapping) else {None: token_dirs}
        self.tokenizer = tokenizer
        self.mixture = dict(weights or {})
        self.batch_size, self.max_length = batch_size, max_length
        self.seed, self.num_workers = seed, num_workers
        self.train_start = 0
        """Training windows this rank already consumed (set when resuming)."""
        self.train_length: int | None = None
        """Training windows to yield (default: one epoch of all sources)."""

    def setup(self, stage: str | None = None) -> None:
        """Memory-map the token files after checking they belong to this tokenizer and are complete."""
        fingerprint = tokenizer_fingerprint(self.tokenizer)
        self.names: list[str] = []
        self.manifests: list[TokenManifest] = []
        self.train_splits: list[np.memmap] = []
        self.val_splits: list[np.memmap] = []
        for name, token_dir in self.token_dirs.items():
            manifest = read_token_manifest(token_dir)
            check_tokenizer(token_dir, manifest, fingerprint)
            verify_token_files(token_dir, manifest)  # hashed once per file, remembered after
            self.names.append(name or manifest.source.dataset)
            self.manifests.append(manifest)
            self.train_splits.append(open_tokens(token_dir, TRAIN, manifest))
            self.val_splits.append(open_tokens(token_dir, VALIDATION, manifest))
        self.weights = mixture_weights(self.names, [len(t) for t in self.train_splits], self.mixture)

    @property
    def validation_sources(self) -> ValidationSources:
        """What the causal LM is told of the validation batches (after :meth:`setup`)."""
        return ValidationSources.of(zip(self.names, self.manifests, strict=True))

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer  # set by Lightning when it runs this module; None in a notebook
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        sampler = WindowSampler(
            [len(tokens) for tokens in self.train_splits],
            self.max_length,
            self.seed,
            weights=self.weights,
            names=self.names,
            start=self.train_start,
            length=self.train_length,
            rank=rank,
            world_size=world_size,
        )
        return DataLoader(
            TokenWindows(self.train_splits, self.max_length),
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=True,
            generator=self._loader_generator(),
            pin_memory=self._pin_memory(),
        )

    def val_dataloader(self) -> DataLoader:
        windows = SourceValidation(self.val_splits, self.max_length)
        return DataLoader(
            windows,
            batch_sampler=windows.batches(self.batch_size, *self._rank()),  # sums are reduced over ranks
            num_workers=self.num_workers,
            generator=self._loader_generator(),
            pin_memory=self._pin_memory(),
        )

    def _pin_memory(self) -> bool:
        """Batches in page-locked memory when training on CUDA: Lightning then copies them with
        ``non_blocking``, overlapping the copy with the step before."""
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _loader_generator(self) -> torch.Generator:
        """A private generator for the loader's worker seeds: creating a loader then never
        consumes the global RNG, which dropout uses, so a resumed run draws the same numbers."""
        return torch.Generator().manual_seed(self.seed)
