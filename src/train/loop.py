"""The training loop every rank runs: build the module, stream windows, validate, checkpoint.

A :class:`Placement` says where the Trainer runs (one process or a Ray worker
group) and how a checkpoint is persisted; everything else is the same for both
backends, so one process and N Ray workers give the same curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

from src.config import Params
from src.data.token_data import TokenDataModule
from src.models.causal_lm import CausalLM, build_model
from src.models.flops import flops_per_token
from src.models.metrics import (
    TRAIN_LOSS,
    UNIGRAM_BPB,
    UNIGRAM_PERPLEXITY,
    VAL_BPB,
    VAL_LOSS,
    VAL_PERPLEXITY,
    bits_per_byte,
    per_source,
    perplexity,
    source_of,
)
from src.paths import resolve_path, workspace_root
from src.train.callbacks import (
    AlignValidation,
    RestoreTrainingState,
    StepEnd,
    StepRecorder,
)
from src.train.checkpoints import CheckpointState, rng_states
from src.train.history import History
from src.train.reporting import unigram_nats
from src.train.run_inputs import RunInputs
from src.train.stopping import StopSignals
from src.train.tracking import RunTracker
from src.train.trainer_settings import progress_bar, trainer_settings
from src.utils.faults import kill_point

#: Saves one checkpoint: (trainer, step, state). Every rank calls it; only rank 0 has a state.
#: Returns where it went, where that is a local file.
Persist = Callable[[L.Trainer, int, "CheckpointState | None"], "Path | None"]


@dataclass(frozen=True)
class Placement:
    """Where the Trainer runs (one process, or a Ray worker group) and where its checkpoints go."""

    trainer_options: dict[str, Any]
    persist: Persist
    wrap_trainer: Callable[[L.Trainer], L.Trainer] = field(default=lambda trainer: trainer)
    """Applied to the Trainer before fitting (Ray's ``prepare_trainer``)."""
    callbacks: tuple[L.Callback, ...] = ()
    """More Lightning callbacks this placement needs (Ray: report each step's progress)."""
    stop: StopSignals | None = None
    """Where a stop request arrives: checkpoint at the next step boundary and end (one process)."""


@dataclass(frozen=True)
class Outcome:
    """What training produced, for the outputs: the weights, the history and the final metrics."""

    module: CausalLM
    history: History
    metrics: dict[str, float]
    weights: dict[str, Any]


def build_module(params: Params, root: Path, inputs: RunInputs) -> CausalLM:
    """The LightningModule around a freshly built (or pretrained) causal LM."""
    model_cache = resolve_path(params.paths.model_cache, workspace_root(root))
    model = build_model(
        params.model, inputs.vocabulary, params.train.max_length, model_cache, params.download.hub_timeout_s
    )
    return CausalLM(model, params.train, inputs.validation)


def train_on_rank(
    params: Params, root: Path, inputs: RunInputs, tracker: RunTracker | None, placement: Placement
) -> Outcome:
    """Train from ``inputs`` to ``train.max_steps`` and validate; every rank runs this.

    ``tracker`` is None on the ranks that log nothing (all but rank 0).
    """
    t = params.train
    L.seed_everything(t.seed, workers=True, verbose=False)
    module = build_module(params, root, inputs)
    if inputs.resumed:
        module.model.load_state_dict(inputs.resumed.model)

    data = TokenDataModule(
        inputs.token_dirs,
        inputs.tokenizer,
        weights=t.mixture,
        batch_size=t.batch_size,
        max_length=t.max_length,
        seed=t.seed,
        num_workers=t.num_workers,
    )
    windows_per_step = t.accumulate_grad_batches * t.batch_size  # per rank
    data.train_start = inputs.step * windows_per_step
    data.train_length = (t.max_steps - inputs.step) * windows_per_step

    history = History.from_state(inputs.resumed.history.state()) if inputs.resumed else History()

    def save(trainer: L.Trainer, step: int) -> Path | None:
        # Every rank takes part: a sharding strategy (FSDP) gathers the full states here.
        weights = model_weights(trainer)
        optimizer = trainer.strategy.optimizer_state(trainer.optimizers[0])
        state = None
        if trainer.is_global_zero:
            state = CheckpointState(
                fingerprint=inputs.fingerprint,
                settings=inputs.shaping,
                inputs=inputs.inputs,
                step=step,
                model=weights,
                optimizer=optimizer,
                scheduler=trainer.lr_scheduler_configs[0].scheduler.state_dict(),
                rng=rng_states(),
                history=history,
                mlflow_run_id=tracker.run_id if tracker else None,
            )
        path = placement.persist(trainer, step, state)
        kill_point("train.checkpoint-persisted")
        kill_point(f"train.checkpoint-{step}-persisted")  # the same moment, at one step only
        if tracker:
            # MLflow gets the steps once the checkpoint holds them: a resumed run never logs one twice
            # (and logs any that a kill between the two left out, see RunTracker.log_missing).
            tracker.flush()
        return path

    recorder = StepRecorder(
        history,
        start_step=inputs.step,
        max_steps=t.max_steps,
        windows_per_step=windows_per_step,
        max_length=t.max_length,
        accumulate=t.accumulate_grad_batches,
        log_metrics=tracker.log_metrics if tracker else None,
        flops_per_token=flops_per_token(module.model, t.max_length),
        peak_tflops=t.peak_tflops,
    )
    step_end = StepEnd(
        save,
        recorder.record,
        start_step=inputs.step,
        max_steps=t.max_steps,
        eval_every=t.eval_every,
        checkpoint_every=t.checkpoint_every,
        accumulate=t.accumulate_grad_batches,
        stop=placement.stop,
    )
    callbacks: list[L.Callback] = [recorder, step_end]  # in this order: a step's loss is queued first
    callbacks += placement.callbacks
    callbacks.append(AlignValidation(inputs.step, t.eval_every, t.accumulate_grad_batches))
    if inputs.resumed:
        callbacks.append(RestoreTrainingState(inputs.resumed))
    trainer = L.Trainer(
        **trainer_settings(t, placement.trainer_options, inputs.step),
        callbacks=callbacks + progress_bar(placement.trainer_options, recorder),
        default_root_dir=str(root / "tmp" / "lightning"),
    )
    trainer = placement.wrap_trainer(trainer)
    if inputs.step < t.max_steps:
        trainer.fit(module, datamodule=data)
    final = trainer.validate(module, datamodule=data, verbose=False)[0]
    val_loss = float(final[VAL_LOSS])
    metrics = {
        TRAIN_LOSS: history.train[-1][TRAIN_LOSS] if history.train else math.nan,
        VAL_LOSS: val_loss,
        VAL_PERPLEXITY: perplexity(val_loss),
        VAL_BPB: float(final.get(VAL_BPB, math.nan)),
        "tokens_per_s": history.tokens_seen / history.train_seconds if history.train_seconds else math.nan,
        "steps": t.max_steps,
        "tokens_seen": history.tokens_seen,
    }
    metrics.update({name: float(value) for name, value in final.items() if source_of(name) is not None})
    if trainer.is_global_zero:  # only rank 0's metrics are reported: the others skip the count
        metrics.update(unigram_baseline(data, inputs.vocabulary.size))
    metrics.update(recorder.speed(metrics["tokens_per_s"], trainer.world_size))
    return Outcome(module, history, metrics, model_weights(trainer))


def unigram_baseline(data: TokenDataModule, vocab_size: int) -> dict[str, float]:
    """The unigram model of the training data (the sources mixed by weight) on the validation text: its
    perplexity and bits per byte overall, and bits per byte per source when there are several."""
    nats = unigram_nats(data.train_splits, data.val_splits, vocab_size, data.weights)  # per source
    sources = data.validation_sources
    tokens = sum(len(split) for split in data.val_splits)
    baseline = {
        UNIGRAM_PERPLEXITY: math.exp(sum(nats) / tokens),
        UNIGRAM_BPB: bits_per_byte(sum(nats), sum(sources.text_bytes)),
    }
    if len(sources.names) > 1:
        for name, source_nats, text_bytes in zip(sources.names, nats, sources.text_bytes, strict=True):
            baseline[per_source(UNIGRAM_BPB, name)] = bits_per_byte(source_nats, text_bytes)
    return baseline


def model_weights(trainer: L.Trainer) -> dict[str, Any]:
    """The causal LM's full weights, gathered by the strategy (call on every rank)."""
    prefix = "model."
    state = trainer.strategy.lightning_module_state_dict()
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
