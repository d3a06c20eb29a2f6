"""The train stage's data module: it only reads token folders, checked, as seeded windows per rank."""

from __future__ import annotations

import shutil
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from src.data.token_data import TokenDataModule
from src.errors import ConfigError, PipelineError


@pytest.fixture
def tokenizer(token_dir: Path):
    return AutoTokenizer.from_pretrained(str(token_dir / "tokenizer"))


def test_windows_of_max_length_and_full_validation(token_dir: Path, tokenizer) -> None:
    dm = TokenDataModule(token_dir, tokenizer, batch_size=8, max_length=32, seed=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (8, 32) and batch["labels"].shape == (8, 32)
    val_batches = list(dm.val_dataloader())
    assert sum(len(b["input_ids"]) for b in val_batches) == -(-(len(dm.val_splits[0]) - 1) // 31)  # overlap 1
    again = TokenDataModule(token_dir, tokenizer, batch_size=8, max_length=32, seed=0)
    again.setup("fit")
    assert torch.equal(next(iter(again.train_dataloader()))["input_ids"], batch["input_ids"])  # seeded


def test_each_rank_reads_its_own_half_of_every_global_batch(token_dir: Path, tokenizer) -> None:
    dm = TokenDataModule(token_dir, tokenizer, batch_size=8, max_length=32)
    dm.setup("fit")
    alone = torch.cat([b["input_ids"] for b in islice(dm.train_dataloader(), 2)])  # 16 windows
    shards = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, strategy=on_device("cpu"))
        shards.append(torch.cat([b["input_ids"] for b in islice(dm.train_dataloader(), 1)]))
    assert sorted(torch.cat(shards).tolist()) == sorted(alone.tolist())
    assert not torch.equal(shards[0], shards[1])


def on_device(kind: str) -> SimpleNamespace:
    """What the data module reads of a Trainer's strategy: the device it trains on."""
    return SimpleNamespace(root_device=torch.device(kind))


def test_batches_are_pinned_when_training_on_cuda_only(token_dir: Path, tokenizer) -> None:
    """Page-locked batches let Lightning's non_blocking copy overlap the step before; on the CPU
    pinning is only a copy."""
    dm = TokenDataModule(token_dir, tokenizer, batch_size=8, max_length=32)
    dm.setup("fit")
    assert not dm.train_dataloader().pin_memory and not dm.val_dataloader().pin_memory  # no Trainer
    for kind, pinned in (("cpu", False), ("cuda", True)):
        dm.trainer = SimpleNamespace(global_rank=0, world_size=1, strategy=on_device(kind))
        assert (dm.train_dataloader().pin_memory, dm.val_dataloader().pin_memory) == (pinned, pinned)


def test_it_never_prepares_data(token_dir: Path, tokenizer, tmp_path: Path) -> None:
    empty = TokenDataModule(tmp_path / "tokens", tokenizer)
    empty.prepare_data()
    assert not (tmp_path / "tokens").exists()
    with pytest.raises(PipelineError, match=r"manifest.json: not found; run `dvc repro tokenize` first$"):
        empty.setup("fit")
    copy = Path(shutil.copytree(token_dir, tmp_path / "copy"))
    manifest = (copy / "manifest.json").read_bytes()
    (copy / "validation.bin").write_bytes(b"\0\0")
    damaged = TokenDataModule(copy, tokenizer)
    damaged.prepare_data()
    with pytest.raises(
        PipelineError, match=r"validation.bin: truncated or damaged .*re-run `dvc repro tokenize`"
    ):
        damaged.setup("fit")
    assert (copy / "manifest.json").read_bytes() == manifest and (
        copy / "validation.bin"
    ).read_bytes() == b"\0\0"


def test_impossible_sizes_are_refused(token_dir: Path, tokenizer) -> None:
    with pytest.raises(ConfigError, match=r"^batch_size / max_length: expected >= 1 / >= 2, got 0 / 128$"):
        TokenDataModule(token_dir, tokenizer, batch_size=0)
