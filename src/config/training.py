"""The training sections of ``params.yaml``: the model, optimisation, Ray Train and MLflow."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from src.errors import FieldError
from src.utils.typed_config import setting

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
    vocab_multiple: int = setting(64, within="[1, 65536]")
    """Pad a new model's embedding and LM head to a multiple of this many rows (GPU matmuls are faster
    on such shapes: 50,257 -> 50,304); the padded ids are never predicted, sampled or scored. 1 = none."""

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
    fused_optimizer: Literal["auto"] | bool = "auto"
    """AdamW's fused kernel (one launch for every parameter): ``auto`` = on CUDA, where it is faster,
    except under 16-mixed with clipping (its scaler unscales inside the fused step); the pipeline
    clips the gradients itself, so clipping and the fused step go together."""
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
    """Write a checkpoint every this many optimizer steps (after the step's validation, when it has one)."""
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
        if self.warmup_steps >= self.max_steps:
            raise FieldError("warmup_steps", f"must be below train.max_steps ({self.max_steps})")
        if self.fused_optimizer is True and self.precision == "16-mixed" and self.grad_clip:
            # Its gradient scaler unscales inside the fused step, after the clipping read the gradients.
            raise FieldError(
                "fused_optimizer",
                "cannot clip with 16-mixed (its scaler unscales inside the fused step); use "
                "train.precision: bf16-mixed, or train.fused_optimizer: false",
            )
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
