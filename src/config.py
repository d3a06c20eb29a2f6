"""Typed, validated view of ``params.yaml``: one frozen dataclass per section.

``params.yaml`` is the single place where settings live: DVC hashes its sections
into ``dvc.lock``, ``dvc exp run -S`` edits it, and the code reads it only
through :func:`load_params`, which rejects unknown keys, wrong types and
impossible values before any work starts.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml

from src.errors import ConfigError, FieldError
from src.paths import PROJECT_ROOT, display_path, resolve_path
from src.utils.typed_config import build, setting
from src.utils.yaml_loader import load_yaml

PARAMS_FILE = PROJECT_ROOT / "params.yaml"

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


#: ``model.config`` keys the pipeline derives itself (:func:`src.models.architectures.common_settings`),
#: under every family's name for them, by what decides them instead: a value there would contradict
#: it (a vocabulary smaller than the tokenizer's fails at the first step). The MLP width
#: (``intermediate_size``), ``num_key_value_heads`` and ``tie_word_embeddings`` are only defaults of
#: the pipeline's, which ``model.config`` may change.
_FROM_TOKENIZER = "the pipeline sets it: {} comes from the tokenizer ({}); remove it from model.config"
_FROM_SETTING = "the pipeline sets it from {0}; set {0} instead, and remove it from model.config"
_CONTEXT = (
    "the pipeline sets it: the context is train.max_length; set that instead, and remove it from model.config"
)
_DERIVED_BY: dict[str, tuple[str, ...]] = {
    _FROM_TOKENIZER.format("the vocabulary", "tokenize.vocab_size for the trained BPE"): (
        "vocab_size",
        "n_vocab",
    ),
    _FROM_TOKENIZER.format("every special-token id", "its EOS: tokenize.eos_token"): (
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    ),
    _CONTEXT: (
        "max_position_embeddings",
        "n_positions",
        "n_ctx",
        "max_seq_len",
        "seq_length",
        "max_sequence_length",
    ),
    _FROM_SETTING.format("model.n_embd"): ("hidden_size", "n_embd", "d_model"),
    _FROM_SETTING.format("model.n_head"): ("num_attention_heads", "n_head", "n_heads", "num_heads"),
    _FROM_SETTING.format("model.n_layer"): ("num_hidden_layers", "n_layer", "n_layers", "num_layers"),
    _FROM_SETTING.format("model.dropout"): ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout"),
}
DERIVED_MODEL_SETTINGS: dict[str, str] = {key: why for why, keys in _DERIVED_BY.items() for key in keys}
"""``model.config`` key -> why it is refused at params load, and what to set instead."""


@dataclass(frozen=True)
class ModelConfig:
    """The causal language model: a new model of a ``transformers`` family, or pretrained weights."""

    pretrained: str = ""
    """A Hub model name or model folder to load weights from; empty builds a new model as set below."""
    trust_remote_code: bool = False
    """Allow a pretrained model to run code from its repository (only for sources you trust)."""
    architecture: str = "llama"
    """The family of a new model: any causal-LM config type of transformers (gpt2, llama, qwen2,
    mistral ...)."""
    config: dict[str, Any] = field(default_factory=dict)
    """More settings of the family's config, e.g. ``{num_key_value_heads: 2, tie_word_embeddings: false}``."""
    n_layer: int = setting(4, within="[1, 1024]")
    """Transformer blocks of the new model."""
    n_head: int = setting(4, within="[1, 1024]")
    """Attention heads per block; must divide ``n_embd``."""
    n_embd: int = setting(128, within="[1, 65536]")
    """Width of the new model."""
    dropout: float = setting(0.0, within="[0, 1)")
    """Dropout of the new model (GPT-2: embeddings, attention and residuals; others: attention)."""

    def __post_init__(self) -> None:
        if not self.pretrained and self.n_embd % self.n_head:
            raise FieldError("n_head", f"must divide model.n_embd ({self.n_embd}), got {self.n_head}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, evaluation and checkpointing of the train stage."""

    seed: int = setting(0, within="[0, 4294967295]")
    """Seeds weights, dropout and the data order: the same params give the same losses on the same machine."""
    max_length: int = setting(128, within="[2, 1048576]")
    """Tokens per training window (the model's context). Changing it does not re-tokenize."""
    batch_size: int = setting(16, within="[1, 1048576]")
    """Windows per micro-batch and device."""
    accumulate_grad_batches: int = setting(1, within="[1, 65536]")
    """Micro-batches per optimizer step."""
    max_steps: int = setting(600, within="[1, 1000000000]")
    """Optimizer steps to train for."""
    lr: float = setting(3e-3, within="(0, 10]")
    """Peak learning rate of AdamW, reached after the warmup."""
    min_lr_ratio: float = setting(0.1, within="[0, 1]")
    """The cosine decay ends at ``lr * min_lr_ratio``."""
    warmup_steps: int = setting(50, within="[0, 1000000000]")
    """Steps of linear warmup from 0 to ``lr``."""
    weight_decay: float = setting(0.1, within="[0, 10]")
    """AdamW decay, applied to matrices only (not to biases and norms)."""
    beta1: float = setting(0.9, within="[0, 1)")
    """AdamW beta1."""
    beta2: float = setting(0.95, within="[0, 1)")
    """AdamW beta2."""
    grad_clip: float = setting(1.0, within="[0, 1000000]")
    """Clip the gradient norm to this value (0 turns clipping off)."""
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    """Lightning precision: 32-true on CPU; bf16-mixed on GPUs that support it."""
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "cpu"
    """Where to train; ``auto`` takes a GPU when there is one."""
    compile: bool = False
    """Wrap the model in ``torch.compile`` (checkpoints still store the plain weights)."""
    loss_chunk_tokens: int = setting(0, within="[0, 1000000000]")
    """Compute the loss this many tokens at a time, so the (tokens x vocabulary) logits never exist at
    once: less memory for large vocabularies, one more LM-head matmul. 0 = in one piece."""
    peak_tflops: float = setting(0.0, within="[0, 1000000]")
    """The device's peak TFLOP/s for MFU; 0 = the dense bf16 peak of a known GPU (A100, H100, H200,
    L4 ...), none on other devices (then only the achieved TFLOP/s is reported)."""
    eval_every: int = setting(100, within="[1, 1000000000]")
    """Run validation every this many optimizer steps (and at the end)."""
    checkpoint_every: int = setting(100, within="[1, 1000000000]")
    """Write a checkpoint every this many optimizer steps; a multiple of ``eval_every``."""
    keep_checkpoints: int = setting(2, within="[1, 1000]")
    """How many of the newest checkpoints to keep per configuration."""
    keep_configurations: int = setting(3, within="[1, 1000]")
    """Checkpoint folders of how many configurations (settings, data, code) to keep, newest first.
    Older ones are removed only after a run has finished, never when one starts."""
    resume: Literal["auto", "never"] = "auto"
    """``auto`` continues from the newest checkpoint made with the same params; ``never`` starts afresh."""
    sample_prompt: str = "In the beginning"
    """Prompt of the text sample generated after training."""
    sample_tokens: int = setting(60, within="[1, 100000]")
    """Tokens to generate for the sample."""
    num_workers: int = setting(0, within="[0, 256]")
    """Data-loader worker processes (0 loads in the training process)."""
    mixture: dict[str, float] = field(default_factory=dict)
    """Share of training windows drawn from each dataset of ``tokenize.datasets``, e.g. ``{kjv: 0.7,
    notes: 0.3}`` (normalised; 0 = validated on, not trained on). Empty = proportional to each
    dataset's training tokens (one dataset: all of them)."""

    def __post_init__(self) -> None:
        for name, weight in self.mixture.items():
            if not isinstance(weight, int | float) or isinstance(weight, bool) or not 0 <= weight < math.inf:
                raise FieldError(f"mixture.{name}", f"expected a weight >= 0, got {weight!r}")
        if self.mixture and not any(self.mixture.values()):
            raise FieldError("mixture", "at least one weight must be above 0")
        if self.checkpoint_every % self.eval_every:
            raise FieldError(
                "checkpoint_every",
                f"must be a multiple of train.eval_every ({self.eval_every}) so a resumed run validates "
                f"at the same steps, got {self.checkpoint_every}",
            )
        if self.warmup_steps >= self.max_steps:
            raise FieldError("warmup_steps", f"must be below train.max_steps ({self.max_steps})")
        if not self.sample_prompt:
            # Known now, not after training: the sample is generated at the very end.
            raise FieldError("sample_prompt", "must not be empty (the sample continues it); give a few words")


@dataclass(frozen=True)
class RayConfig:
    """Distributed training with Ray Train: the same model and data on many workers."""

    use_ray: bool = False
    """Train with Ray Train's ``TorchTrainer`` instead of one local process."""
    num_workers: int = setting(2, within="[1, 4096]")
    """Training workers (one process each). The global batch is
    ``train.batch_size x num_workers x train.accumulate_grad_batches`` windows."""
    use_gpu: bool = False
    """Give every worker a GPU (and train on it)."""
    resources_per_worker: dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    """Ray resources each worker reserves, e.g. ``{CPU: 4, GPU: 1}``."""
    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    """Lightning strategy on Ray: ``RayDDPStrategy``, ``RayFSDPStrategy`` or ``RayDeepSpeedStrategy``
    (needs the ``deepspeed`` package)."""
    address: str = ""
    """Empty: start a local Ray cluster for the run (and stop it after); ``auto`` or
    ``ray://host:10001``: connect to a running cluster."""
    storage_path: str = ""
    """Where Ray Train keeps checkpoints (local folder or ``s3://``-style URI; shared storage on a
    multi-node cluster). Empty: ``<paths.checkpoint_dir>/ray``."""
    max_failures: int = setting(0, within="[-1, 1000]")
    """Restarts after a worker failure, each from the newest checkpoint (-1: without limit)."""

    def __post_init__(self) -> None:
        for name, amount in self.resources_per_worker.items():
            if amount < 0:
                raise FieldError(f"resources_per_worker.{name}", f"must be 0 or more, got {amount}")
        if self.address and not (self.address == "auto" or ":" in self.address):
            raise FieldError(
                "address", f'expected "", "auto" or host:port / ray://host:port, got {self.address!r}'
            )


@dataclass(frozen=True)
class MlflowConfig:
    """Experiment tracking: every training run is one MLflow run."""

    tracking_uri: str = ""
    """Where runs go: empty is ``mlflow.db`` (SQLite) at the project root; or ``http://host:port``."""
    experiment_name: str = "lmpipe"
    """MLflow experiment that holds the runs."""
    register_model: str = ""
    """Register each training's logged model under this name in the Model Registry (a new version
    per run); empty registers nothing."""


@dataclass(frozen=True)
class Params:
    """Everything in ``params.yaml``."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    """Output and cache locations."""
    download: DownloadConfig = field(default_factory=DownloadConfig)
    """The download stage."""
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    """The tokenize stage."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Distributed training with Ray Train."""
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    """MLflow tracking."""

    def __post_init__(self) -> None:
        for key in self.model.config:
            if key in DERIVED_MODEL_SETTINGS:
                raise FieldError(f"model.config.{key}", DERIVED_MODEL_SETTINGS[key])
        cache_dir = resolve_path(self.paths.cache_dir)
        for name, spec in self.download.local.items():
            folder = resolve_path(spec.data_dir or ".")
            if folder == PROJECT_ROOT or not (spec.data_dir or "").strip():
                raise FieldError(
                    f"download.local.{name}.data_dir",
                    "the project root would be the corpus (and DVC would watch all of it); give the "
                    "folder that holds the files",
                )
            if cache_dir == folder or folder in cache_dir.parents:
                raise FieldError(
                    f"download.local.{name}.data_dir",
                    f"{spec.data_dir!r} holds paths.cache_dir, where the exports and tokens are written; "
                    "give a folder outside it",
                )
        known = self.download.all_datasets()
        for name in self.tokenize.datasets:
            if name not in known:
                raise FieldError(
                    "tokenize.datasets",
                    f"{name!r} is not in download.datasets or download.local ({', '.join(known)})",
                )
        mixture, tokenized = set(self.train.mixture), set(self.tokenize.datasets)
        if mixture and mixture != tokenized:
            extra, missing = sorted(mixture - tokenized), sorted(tokenized - mixture)
            problem = (
                f"{extra[0]!r} is not in tokenize.datasets; add it there"
                if extra
                else f"no weight for {missing[0]!r} of tokenize.datasets; give it one (0 = validate only)"
            )
            raise FieldError("train.mixture", problem)


def available_cores() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: ``paths.*`` keys whose folders hold DVC outputs (``dvc.yaml`` templates its ``outs``, ``metrics``
#: and ``plots`` from them). DVC tracks outputs inside its repository only; ``model_cache``,
#: ``log_dir`` and ``checkpoint_dir`` are no outputs and may be anywhere.
DVC_OUTPUT_PATHS = ("cache_dir", "model_dir", "metrics_file", "plots_dir")


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_outputs_in_project(paths: PathsConfig, root: Path) -> None:
    """Refuse a ``paths.*`` DVC output outside the project at ``root`` (relative paths start there).

    The test is on the path as written, links not followed: a symlink inside the project that
    leads to another disk is inside it for DVC too."""
    folder = os.path.normpath(os.path.abspath(root))
    folders = (folder, os.path.realpath(folder))
    for key in DVC_OUTPUT_PATHS:
        value = getattr(paths, key)
        where = os.path.normpath(os.path.join(folder, os.path.expanduser(value)))
        if not any(_is_within(where, inside) for inside in folders):
            raise ConfigError(
                f"paths.{key}: {value!r} is outside the project ({display_path(root)}), and DVC cannot "
                "track an output outside its repository; use a path inside the project (to keep the "
                "data on another disk, a symlink inside the project pointing there)"
            )


def parse_params(data: Any) -> Params:
    """Validate already-parsed YAML data (e.g. a dict sent to a worker)."""
    return build(Params, data, "")


def load_params(path: str | Path | None = None) -> Params:
    """Read and validate a params file (default :data:`PARAMS_FILE`); any problem is one
    :class:`ConfigError` line.

    The project's own params file (the one the DVC stages read) must also keep every DVC output
    inside the project (:func:`check_outputs_in_project`); a params file elsewhere, given to a script
    with ``--params``, belongs to no DVC project and may put its outputs anywhere."""
    path = resolve_path(PARAMS_FILE if path is None else path)
    shown = display_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{shown}: file not found; run from the project root or pass --params") from None
    except IsADirectoryError:
        raise ConfigError(f"{shown}: is a folder, expected the params file; pass --params <file>") from None
    except OSError as error:
        raise ConfigError(f"{shown}: cannot read it ({error.strerror}); make it readable") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            f"{shown} (line {line}): byte 0x{raw[error.start]:02x} is not UTF-8; save the file as UTF-8 "
            "(DVC reads it as UTF-8 too)"
        ) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{shown}{where}: {problem}; fix the YAML syntax") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{shown}: expected a mapping of sections at the top level")
    params = parse_params(data or {})
    stage_file = resolve_path(PARAMS_FILE)
    if path == stage_file or path.resolve() == stage_file.resolve():
        check_outputs_in_project(params.paths, stage_file.parent)  # the file the DVC stages read
    return params
