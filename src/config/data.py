"""The data sections of ``params.yaml``: where outputs go, which datasets to download, how to tokenize."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from src.errors import FieldError
from src.paths import PROJECT_ROOT, resolve_path
from src.utils.typed_config import setting

#: ``tokenize.tokenizer`` value that trains a byte-level BPE instead of loading a tokenizer.
BPE = "bpe"

#: The tokenizer's folder beside the datasets' token folders (so no dataset may take its name).
TOKENIZER_FOLDER = "tokenizer"

#: Dataset names become folder names next to the Hugging Face cache, so keep them plain.
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

DataFiles = str | list[str] | dict[str, str | list[str]]


@dataclass(frozen=True)
class PathsConfig:
    """Where the pipeline keeps its outputs and caches (relative to the project root)."""

    cache_dir: str = "data/main_cache"
    """Pipeline data root: raw exports under ``<cache_dir>/raw``, tokens under ``<cache_dir>/tokenized``."""
    model_cache: str = "data/model_cache"
    """Hugging Face model and tokenizer files fetched from the Hub."""
    log_dir: str = "data/logs"
    """Where each download run writes ``download_datasets_<n>.log``."""
    model_dir: str = "data/model"
    """The trained model (``save_pretrained`` format plus its tokenizer): the train stage's output."""
    checkpoint_dir: str = "data/checkpoints"
    """Training checkpoints, kept across runs so an interrupted run resumes."""
    metrics_file: str = "metrics.json"
    """Final metrics of the last training run (``dvc metrics show``)."""
    plots_dir: str = "plots"
    """Per-step loss curves as CSV files (``dvc plots show``)."""
    eval_dir: str = "data/eval"
    """The evaluate stage's lm-eval results (``results.json``, lm-eval's whole output)."""
    eval_metrics_file: str = "eval_metrics.json"
    """One value per evaluation task and metric (``dvc metrics show``, ``dvc exp show``)."""

    def raw_dir(self, root: Path = PROJECT_ROOT) -> Path:
        """``<cache_dir>/raw``: the Hugging Face datasets cache and the canonical exports."""
        return resolve_path(self.cache_dir, root) / "raw"

    def tokenized_dir(self, tokenizer: str, root: Path = PROJECT_ROOT) -> Path:
        """``<cache_dir>/tokenized/<tokenizer>``: one token folder per dataset."""
        return resolve_path(self.cache_dir, root) / "tokenized" / tokenizer

    def tokenizer_dir(self, tokenizer: str, root: Path = PROJECT_ROOT) -> Path:
        """``<cache_dir>/tokenized/<tokenizer>/tokenizer``: the tokenizer stage's output, which every
        dataset's tokenize stage encodes with."""
        return self.tokenized_dir(tokenizer, root) / TOKENIZER_FOLDER

    def eval_data_dir(self, dataset: str, root: Path = PROJECT_ROOT) -> Path:
        """``<cache_dir>/eval/<dataset>``: the built-in evaluation tasks' data for one source."""
        return resolve_path(self.cache_dir, root) / "eval" / dataset

    def token_dir(self, tokenizer: str, dataset: str, root: Path = PROJECT_ROOT) -> Path:
        """``<cache_dir>/tokenized/<tokenizer>/<dataset>``: one dataset's token files, its manifest and
        the tokenizer's files."""
        return self.tokenized_dir(tokenizer, root) / dataset


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset, described by the arguments of ``datasets.load_dataset``."""

    path: str
    """A packaged builder (``json``, ``text``, ``csv``, ``parquet``), a local folder, or a Hub dataset id."""
    name: str | None = None
    """The dataset configuration (``wikitext-2-raw-v1``), if the source has several."""
    data_files: DataFiles | None = None
    """Files for a packaged builder: files, glob patterns (``*.txt``, ``**/*.jsonl``) or folders (every
    file under them), relative to ``data_dir`` (default: the project root); http(s) URLs; or
    ``package://<module>/<file>`` for a file shipped inside an installed Python package. One entry, a
    list, or a mapping of splits to them (``{train: "train/*.txt", validation: valid.txt}``)."""
    data_dir: str | None = None
    """The folder holding the data files (``load_dataset``'s ``data_dir``): ``data_files`` are relative to
    it, and without ``data_files`` every file under it is the train split. Required under
    ``download.local``, where DVC watches it."""
    options: dict[str, Any] = field(default_factory=dict)
    """Settings of the builder, passed to ``load_dataset`` as they are: ``{sample_by: paragraph}`` or
    ``{encoding: latin-1}`` for ``text``, ``{field: data}`` for nested ``json``, ``{delimiter: ";"}`` for
    ``csv``... The builder's own declaration decides which exist and what they take."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) to pin a Hub dataset to."""
    text_column: str = "text"
    """The column holding the document text; it is the only column exported."""
    validation_fraction: float = setting(0.02, within="(0, 1)")
    """Share of rows held out as the validation split when the source has none."""
    split_seed: int = setting(0, within="[0, 4294967295]")
    """Seed of the deterministic train/validation split."""


@dataclass(frozen=True)
class DownloadConfig:
    """The download stage: which datasets to fetch and export."""

    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    """Datasets to download (the guide's ``DATASETS_TO_DOWNLOAD``), keyed by their export folder name:
    Hub datasets (their ``revision`` pins them), URLs and ``package://`` files."""
    local: dict[str, DatasetSpec] = field(default_factory=dict)
    """Datasets read from a folder of files (``data_dir``), keyed like ``datasets``. The folder is a DVC
    dependency of the dataset's own stage, ``download_local@<name>``: editing, adding or removing a
    file in it re-runs that download only."""
    hub_timeout_s: float = setting(3.0, within="(0, 120]")
    """Seconds to wait for the Hugging Face Hub before treating it as unreachable."""

    def __post_init__(self) -> None:
        if not self.datasets and not self.local:
            raise FieldError("datasets", "list at least one dataset to download")
        for group, specs in (("datasets", self.datasets), ("local", self.local)):
            for name, spec in specs.items():
                if not _DATASET_NAME.match(name):
                    raise FieldError(
                        f"{group}.{name}", "dataset names may use letters, digits, '.', '_' and '-' only"
                    )
                if group == "local" and spec.data_dir is None:
                    raise FieldError(
                        f"local.{name}.data_dir",
                        "required: the folder that holds the files (DVC watches it); "
                        "data_files are relative to it",
                    )
        both = sorted(set(self.datasets) & set(self.local))
        if both:
            raise FieldError(f"local.{both[0]}", "the name is also in download.datasets; rename one")

    def all_datasets(self) -> dict[str, DatasetSpec]:
        """Every dataset, ``datasets`` then ``local``: the names ``tokenize.datasets`` can list."""
        return {**self.datasets, **self.local}

    def key_of(self, name: str) -> str:
        """Where ``name`` is defined in ``params.yaml``, for messages (``download.local.notes``)."""
        return f"download.{'local' if name in self.local else 'datasets'}.{name}"


@dataclass(frozen=True)
class TokenizeConfig:
    """The tokenize stage: which exports to encode, with which tokenizer."""

    datasets: tuple[str, ...] = ("kjv",)
    """The exports to tokenize (names from ``download.datasets`` or ``download.local``), each into its
    own folder ``<cache_dir>/tokenized/<tokenizer>/<dataset>/`` by its own stage ``tokenize@<dataset>``:
    adding one never re-encodes the others. Training mixes all of them (``train.mixture``). The
    trained BPE (stage ``tokenizer``) learns from the train split of the first one."""
    tokenizer: str = "bpe"
    """``bpe`` trains a byte-level BPE on the training split; anything else is a Hub tokenizer
    name (``gpt2``) or a tokenizer folder relative to the project root. Tokens go to
    ``<cache_dir>/tokenized/<tokenizer>/``."""
    vocab_size: int = setting(8192, within="[260, 4294967295]")
    """Vocabulary size of the trained BPE (special tokens included)."""
    min_frequency: int = setting(2, within="[1, 1000000]")
    """A pair must occur this often to become a BPE merge."""
    special_tokens: tuple[str, ...] = ("<|endoftext|>",)
    """Special tokens of the trained BPE, given the first ids in this order."""
    eos_token: str = "<|endoftext|>"
    """The token written after every document: the trained BPE's EOS (one of ``special_tokens``). A
    pretrained tokenizer ends documents with its own EOS; this one is used only when it has none."""
    num_proc: int = setting(0, within="[0, 1024]")
    """Encoding threads; 0 uses every core. The output bytes do not depend on it."""

    def __post_init__(self) -> None:
        if not self.datasets:
            raise FieldError("datasets", "name at least one dataset to tokenize")
        if TOKENIZER_FOLDER in self.datasets:
            raise FieldError(
                "datasets", f"{TOKENIZER_FOLDER!r} names the tokenizer's folder; rename that dataset"
            )
        repeated = sorted({name for name in self.datasets if self.datasets.count(name) > 1})
        if repeated:
            raise FieldError("datasets", f"{repeated[0]!r} is listed twice")
        name = PurePosixPath(self.tokenizer)
        if not self.tokenizer or name.is_absolute() or ".." in name.parts:
            raise FieldError(
                "tokenizer", f"expected a name or a path inside the project, got {self.tokenizer!r}"
            )
        if self.tokenizer == BPE and self.eos_token not in self.special_tokens:
            raise FieldError("eos_token", f"{self.eos_token!r} must be one of tokenize.special_tokens")

    def threads(self) -> int:
        """Encoding threads to use: ``num_proc``, or every available core when it is 0."""
        return self.num_proc or available_cores()


def available_cores() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
