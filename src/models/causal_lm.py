"""The causal LM as a LightningModule: the same module trains in one process or on Ray workers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from src.config import ModelConfig, TrainConfig
from src.data.token_data import TokenDataModule
from src.data.token_files import ValidationSources
from src.data.windows import IGNORE_INDEX
from src.errors import ConfigError
from src.models.architectures import new_model_config
from src.models.chunked_loss import chunked_causal_lm_loss, unsupported_reason
from src.models.metrics import (
    MAX_LOSS_FOR_PERPLEXITY,
    TRAIN_LOSS,
    VAL_BPB,
    VAL_LOSS,
    VAL_PERPLEXITY,
    bits_per_byte,
    per_source,
)
from src.models.optim import build_optimizer, clip_gradient_norm, use_fused
from src.utils.hub import from_folder_or_hub


@dataclass(frozen=True)
class Vocabulary:
    """What the model needs to know about the tokens it is trained on (from the token manifest)."""

    size: int
    eos_id: int
    bos_id: int | None = None
    """The tokenizer's BOS; None when it has none, and a new model then begins with EOS (as GPT-2 does)."""


@dataclass(frozen=True)
class LossOnly:
    """The forward output of the chunked loss: there are no full logits to return."""

    loss: torch.Tensor


def build_model(
    config: ModelConfig, vocab: Vocabulary, max_length: int, model_cache: Path, hub_timeout_s: float = 3.0
) -> nn.Module:
    """A new model of ``model.architecture`` (random init), or pretrained weights when
    ``config.pretrained`` is set."""
    from transformers import AutoModelForCausalLM

    if config.pretrained:
        model = from_folder_or_hub(
            AutoModelForCausalLM.from_pretrained,
            config.pretrained,
            key="model.pretrained",
            cache_dir=model_cache,
            timeout_s=hub_timeout_s,
            trust_remote_code=config.trust_remote_code,
        )
        if scored_vocabulary(model) < vocab.size:  # a padded tail does not count: it is never scored
            raise ConfigError(
                f"model.pretrained: {config.pretrained!r} has fewer embeddings than the tokenizer's "
                f"{vocab.size} tokens; tokenize with its own tokenizer"
            )
        return model
    rows = config.vocab_multiple * math.ceil(vocab.size / config.vocab_multiple)
    hf_config = new_model_config(config, rows, vocab.eos_id, max_length, vocab.bos_id)
    model = AutoModelForCausalLM.from_config(
        hf_config, attn_implementation="sdpa", trust_remote_code=config.trust_remote_code
    )
    model.loss_type = "ForCausalLM"  # named, so transformers does not warn that it has to guess
    # generate() pads finished sequences with EOS, saved in generation_config.json; the model config
    # has no pad token (see common_settings).
    model.generation_config.pad_token_id = vocab.eos_id
    if rows > vocab.size:
        # Saved with the model: generate() of whoever loads it never yields an id the tokenizer lacks,
        # and scored_vocabulary() reads the same list, so the loss leaves those ids out as well.
        model.generation_config.suppress_tokens = list(range(vocab.size, rows))
    return model


def scored_vocabulary(model: nn.Module) -> int:
    """The ids the loss is over: the embedding's rows less a padded tail (see ``model.vocab_multiple``),
    which the saved generation config suppresses."""
    rows = model.get_output_embeddings().weight.shape[0]
    suppressed = getattr(getattr(model, "generation_config", None), "suppress_tokens", None) or []
    start = rows - len(suppressed)
    return start if sorted(suppressed) == list(range(start, rows)) else rows


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, width: int) -> torch.Tensor:
    """Mean next-token cross-entropy over the first ``width`` columns of ``logits``, upcast as
    transformers computes it. The labels are shifted (padded with an ignored target at the end),
    not the logits, so the only copy of the logits is the one upcast slice."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)
    return F.cross_entropy(logits[..., :width].float().reshape(-1, width), targets, ignore_index=IGNORE_INDEX)


def compiled(module: nn.Module, on: bool) -> nn.Module:
    """``train.compile``: static shapes (``dynamic=False``), as the fastest GPU trainers compile. A run
    has a fixed set of batch shapes (the training batch; validation's, whose last batch per source is
    shorter), each compiled once on first sight, so nothing recompiles after the first validation."""
    return torch.compile(module, dynamic=False) if on else module


class CausalLM(L.LightningModule):
    """Next-token prediction with AdamW, warmup + cosine decay; logs loss, perplexity and learning rate."""

    def __init__(
        self, model: nn.Module, train: TrainConfig, validation: ValidationSources | None = None
    ) -> None:
        """``validation``: the sources the validation batches come from (one, without byte counts,
        unless told)."""
        super().__init__()
        self.model = model
        self.train_config = train
        self.validation = validation or ValidationSources()
        # The compiled wrappers are kept out of the module tree, so state_dict (and every
        # checkpoint) holds the plain weights whether or not compile is on.
        self._forward = [compiled(model, train.compile)]
        self._body: list[nn.Module] = []
        if train.loss_chunk_tokens:
            if reason := unsupported_reason(model):
                raise ConfigError(f"train.loss_chunk_tokens: the model cannot use it: {reason}; set it to 0")
            body = model.base_model  # the transformer without its LM head
            self._body = [compiled(body, train.compile)]
        self._scored = scored_vocabulary(model)
        self._padded = self._scored < model.get_output_embeddings().weight.shape[0]

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        """The model's output (logits: (B, T, V)); with ``train.loss_chunk_tokens`` and labels, only
        the loss, computed without the full logits (src.models.chunked_loss)."""
        if labels is not None and self._body:
            hidden = self._body[0](input_ids=input_ids).last_hidden_state
            head = self.model.get_output_embeddings().weight[: self._scored]
            return LossOnly(chunked_causal_lm_loss(hidden, head, labels, self.train_config.loss_chunk_tokens))
        if labels is not None and self._padded:
            # The padded ids' logits are left out, as if the model had none: the same loss (and val_bpb)
            # as an unpadded model of the same weights.
            logits = self._forward[0](input_ids=input_ids).logits
            return LossOnly(causal_lm_loss(logits, labels, self._scored))
        return self._forward[0](input_ids=input_ids, labels=labels)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(batch["input_ids"], batch["labels"]).loss
        # For callbacks that monitor it; the progress bar shows the step recorder's host copy instead
        # (src.train.callbacks.RecordedProgressBar): a prog_bar metric is read off the device each step.
        self.log(TRAIN_LOSS, loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        labels = batch["labels"]
        loss = self(batch["input_ids"], labels).loss
        scored = (labels[:, 1:] != IGNORE_INDEX).sum()  # the model shifts labels: the first has no target
        # A batch of padding windows (see SourceValidation.batches) scores nothing; its mean loss is NaN.
        total = torch.where(scored > 0, loss.detach().double() * scored, 0.0)
        source = (
            batch["source"][:1] if "source" in batch else torch.zeros(1, dtype=torch.long, device=self.device)
        )
        # A batch holds one source's windows: its sums go to that source (no host sync to find which).
        self._val_sum.index_add_(0, source, total.reshape(1))
        self._val_count.index_add_(0, source, scored.reshape(1))

    def on_validation_epoch_start(self) -> None:
        data = getattr(self._trainer, "datamodule", None)
        if isinstance(data, TokenDataModule) and data.validation_sources.names != self.validation.names:
            # Its batches' source ids index these names: other sources would be summed out of range.
            raise ConfigError(
                f"CausalLM: built for the validation sources {list(self.validation.names)}, but the data "
                f"module validates on {list(data.validation_sources.names)}; build it with "
                "CausalLM(model, train, data.validation_sources)"
            )
        sources = len(self.validation.names)
        self._val_sum = torch.zeros(sources, device=self.device, dtype=torch.float64)
        self._val_count = torch.zeros(sources, device=self.device, dtype=torch.int64)

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sum, reduce_op="sum")  # (sources,)
        counts = self.trainer.strategy.reduce(self._val_count.to(torch.float64), reduce_op="sum")
        for name, metric in self._validation_metrics(sums, counts).items():
            self.log(name, metric, prog_bar=name in (VAL_LOSS, VAL_BPB), sync_dist=False)

    def _validation_metrics(self, sums: torch.Tensor, counts: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss (and bits per byte) over all sources, and per source when there are several."""
        val_loss = (sums.sum() / counts.sum().clamp(min=1)).float()
        metrics = {
            VAL_LOSS: val_loss,
            VAL_PERPLEXITY: torch.exp(val_loss.clamp(max=MAX_LOSS_FOR_PERPLEXITY)),
        }
        names, text_bytes = self.validation.names, self.validation.text_bytes
        if text_bytes:
            # The summed loss in bits over the bytes it predicted: the figure that compares tokenizers.
            metrics[VAL_BPB] = torch.tensor(bits_per_byte(float(sums.sum()), sum(text_bytes)))
        if len(names) > 1:
            for index, name in enumerate(names):
                metrics[per_source(VAL_LOSS, name)] = (sums[index] / counts[index].clamp(min=1)).float()
                if text_bytes:
                    metrics[per_source(VAL_BPB, name)] = torch.tensor(
                        bits_per_byte(float(sums[index]), text_bytes[index])
                    )
        return metrics

    def configure_optimizers(self) -> Any:
        t = self.train_config
        optimizer, schedule = build_optimizer(
            self.model,
            lr=t.lr,
            weight_decay=t.weight_decay,
            betas=(t.beta1, t.beta2),
            warmup_steps=t.warmup_steps,
            max_steps=t.max_steps,
            min_lr_ratio=t.min_lr_ratio,
            fused=use_fused(
                t.fused_optimizer, self.device, scaled_clipping=t.precision == "16-mixed" and t.grad_clip > 0
            ),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """``train.grad_clip`` applied here, not by the Trainer: Lightning's mixed-precision plugins
        refuse to clip for a fused optimizer. A Trainer told to clip (DeepSpeed, which clips inside its
        own step) keeps doing so."""
        if gradient_clip_val:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        elif self.train_config.grad_clip:
            clip_gradient_norm(self.trainer.strategy.model, optimizer, self.train_config.grad_clip)
