"""The guide's data module: download and tokenize once in prepare_data, then read like the train stage."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from src.config import load_params
from src.data.data_manager import LightningDataModule
from src.data.tokenizer_setup import train_bpe
from src.errors import ConfigError, PipelineError


def identities(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_seed_snippet_downloads_tokenizes_once_and_yields_windows(make_params, tmp_path: Path) -> None:
    params_file = make_params(tmp_path, data="empty")
    params = load_params(params_file)
    tokenizer = train_bpe(
        iter(["In the beginning God created the heaven and the earth."] * 50), params.tokenize
    )
    dm = LightningDataModule(
        tokenizer=tokenizer,
        dataset_configs={"kjv": {}},
        batch_size=8,
        max_length=32,
        tokenizer_name="mine",
        params_file=params_file,
    )
    token_dir = params.paths.token_dir("mine", "kjv")
    assert dm.token_dirs == {"kjv": token_dir} and not token_dir.exists()
    dm.prepare_data()
    assert (params.paths.raw_dir() / "kjv" / "manifest.json").is_file()
    assert (token_dir / "train.bin").is_file()
    before = identities(params.paths.raw_dir().parent)
    dm.prepare_data()
    assert identities(params.paths.raw_dir().parent) == before, "a second prepare_data() does no work"

    dm.setup("fit")
    (manifest,) = dm.manifests
    assert manifest.tokenizer.name == "mine" and manifest.tokenizer.kind == "given to the data module"
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (8, 32) and batch["labels"].shape == (8, 32)


def test_stale_tokens_are_made_again(make_params, tmp_path: Path) -> None:
    params_file = make_params(tmp_path, data="copy")
    token_dir = load_params(params_file).paths.token_dir("bpe", "kjv")
    own = AutoTokenizer.from_pretrained(str(token_dir / "tokenizer"))
    good = (token_dir / "train.bin").read_bytes()
    (token_dir / "train.bin").write_bytes(good[:100])
    dm = LightningDataModule(tokenizer=own, dataset_configs={"kjv": {}}, params_file=params_file)
    with pytest.raises(PipelineError, match=r"train.bin: truncated or damaged"):
        dm.setup("fit")  # setup only reads
    dm.prepare_data()
    assert (token_dir / "train.bin").read_bytes() == good
    dm.setup("fit")


def test_tokens_of_another_tokenizer_are_refused(tiny_params_file: Path, token_dir: Path) -> None:
    stranger = train_bpe(iter(["something else entirely"] * 20), load_params(tiny_params_file).tokenize)
    dm = LightningDataModule(
        tokenizer=stranger, dataset_configs={"kjv": {}}, tokenizer_name="bpe", params_file=tiny_params_file
    )
    with pytest.raises(PipelineError, match="tokens were made by tokenizer"):
        dm.setup("fit")
    own = AutoTokenizer.from_pretrained(str(token_dir / "tokenizer"))
    dm = LightningDataModule(tokenizer=own, dataset_configs={"kjv": {}}, params_file=tiny_params_file)
    assert dm.token_dirs == {"kjv": token_dir}
    dm.setup("fit")


def test_unknown_dataset_needs_a_path(tiny_params_file: Path) -> None:
    tokenizer = train_bpe(iter(["a b c"] * 20), load_params(tiny_params_file).tokenize)
    with pytest.raises(
        ConfigError, match=r"^dataset_configs.nope: not in params.yaml download.datasets; give its 'path'$"
    ):
        LightningDataModule(tokenizer=tokenizer, dataset_configs={"nope": {}}, params_file=tiny_params_file)
    with pytest.raises(ConfigError, match=r"^dataset_configs: name at least one dataset"):
        LightningDataModule(tokenizer=tokenizer, dataset_configs={}, params_file=tiny_params_file)
    with pytest.raises(ConfigError, match=r"^weights: expected one weight per dataset of dataset_configs"):
        LightningDataModule(
            tokenizer=tokenizer,
            dataset_configs={"kjv": {}},
            weights={"kjv": 1, "b": 1},
            params_file=tiny_params_file,
        )


def test_several_datasets_are_mixed_and_validated_apart(make_params, tmp_path: Path) -> None:
    """The guide's data module with two datasets: each tokenized into its own folder, training batches
    drawn from both by weight, validation batches from one source each."""
    params_file = make_params(tmp_path, data="copy")
    params = load_params(params_file)
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"note {i}: the quick brown fox jumps over the lazy dog\n" for i in range(400)))
    own = AutoTokenizer.from_pretrained(str(params.paths.token_dir("bpe", "kjv") / "tokenizer"))
    dm = LightningDataModule(
        tokenizer=own,
        dataset_configs={"kjv": {}, "notes": {"path": "text", "data_files": str(notes)}},
        weights={"kjv": 0.5, "notes": 0.5},
        batch_size=4,
        max_length=16,
        tokenizer_name="bpe",
        params=params,
    )
    kjv_before = identities(params.paths.token_dir("bpe", "kjv"))
    dm.prepare_data()
    assert identities(params.paths.token_dir("bpe", "kjv")) == kjv_before, "kjv is not re-encoded"
    assert (params.paths.token_dir("bpe", "notes") / "train.bin").is_file()
    dm.setup("fit")
    assert dm.names == ["kjv", "notes"] and dm.weights == [0.5, 0.5]
    kjv_tokens = len(dm.train_splits[0])
    starts = [int(s) for s in dm.train_dataloader().sampler]
    from_notes = sum(start >= kjv_tokens for start in starts) / len(starts)
    assert abs(from_notes - 0.5) < 0.01
    sources = [set(batch["source"].tolist()) for batch in dm.val_dataloader()]
    assert all(len(s) == 1 for s in sources) and {0, 1} == set().union(*sources)
