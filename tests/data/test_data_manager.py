"""The seed's data module: prepare once, memory-map, windows of max_length."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from src.data.data_manager import LightningDataModule
from src.data.tokenize_corpus import tokenize_from_params
from src.data.tokenizer_setup import train_bpe
from src.errors import PipelineError


def identities(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_seed_snippet_downloads_tokenizes_once_and_yields_windows(
    tiny_params_file: Path, tiny_params
) -> None:
    tokenizer = train_bpe(
        iter(["In the beginning God created the heaven and the earth."] * 50), tiny_params.tokenize
    )
    dm = LightningDataModule(
        tokenizer=tokenizer,
        dataset_configs={"kjv": {}},
        batch_size=8,
        max_length=32,
        tokenizer_name="mine",
        params_file=tiny_params_file,
    )
    dm.prepare_data()
    token_dir = tiny_params.paths.tokenized_dir("mine")
    assert (tiny_params.paths.raw_dir() / "kjv" / "manifest.json").is_file()
    assert (token_dir / "train.bin").is_file()
    before = identities(token_dir)
    dm.prepare_data()
    assert identities(token_dir) == before, "a second prepare_data() does no work"

    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (8, 32) and batch["labels"].shape == (8, 32)
    val_batches = list(dm.val_dataloader())
    assert sum(len(b["input_ids"]) for b in val_batches) == -(-len(dm.val_tokens) // 32)

    # Under a trainer of two ranks, each rank reads its own half of every global batch.
    alone = torch.cat([b["input_ids"] for b in islice(dm.train_dataloader(), 2)])  # 16 windows
    shards = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        shards.append(torch.cat([b["input_ids"] for b in islice(dm.train_dataloader(), 1)]))
    assert sorted(torch.cat(shards).tolist()) == sorted(alone.tolist())
    assert not torch.equal(shards[0], shards[1])


def test_tokens_of_another_tokenizer_are_refused(
    tiny_params_file: Path, tiny_params, tiny_export: Path
) -> None:
    token_dir = tokenize_from_params(tiny_params)
    stranger = train_bpe(iter(["something else entirely"] * 20), tiny_params.tokenize)
    dm = LightningDataModule(
        tokenizer=stranger, dataset_configs={"kjv": {}}, tokenizer_name="bpe", params_file=tiny_params_file
    )
    with pytest.raises(PipelineError, match="tokens were made by tokenizer"):
        dm.setup("fit")
    own = AutoTokenizer.from_pretrained(str(token_dir / "tokenizer"))
    dm = LightningDataModule(tokenizer=own, dataset_configs={"kjv": {}}, params_file=tiny_params_file)
    assert dm.token_dir == token_dir
    dm.setup("fit")


def test_unknown_dataset_needs_a_path(tiny_params_file: Path, tiny_params) -> None:
    tokenizer = train_bpe(iter(["a b c"] * 20), tiny_params.tokenize)
    with pytest.raises(Exception, match=r"dataset_configs.nope: not in params.yaml download.datasets"):
        LightningDataModule(tokenizer=tokenizer, dataset_configs={"nope": {}}, params_file=tiny_params_file)
