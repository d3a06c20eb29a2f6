"""``fit``: the one training function behind the DVC stage and ``python src/train/train.py``.

A run trains ``train.max_steps`` optimizer steps on windows of the tokenized
data, validates every ``train.eval_every`` steps, checkpoints every
``train.checkpoint_every`` steps, and at the end writes the model folder,
``metrics.json`` and the loss-curve CSVs, all mirrored in one MLflow run. An
interrupted run started again with the same params resumes from its newest
checkpoint and ends exactly where the uninterrupted run would have.

The same :func:`train` runs in one local process or on every Ray Train worker
(:mod:`src.train.distributed`); a :class:`Placement` says which.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

from src.config import Params
from src.data.data_manager import LightningDataModule
from src.data.token_files import MANIFEST, TOKENIZER_DIR, read_token_manifest
from src.models.causal_lm import CausalLM, Vocabulary, build_model
from src.paths import PROJECT_ROOT, display_path, resolve_path, workspace_root
from src.train.callbacks import History, PeriodicCheckpoint, RestoreTrainingState, StepRecorder
from src.train.checkpoints import (
    clear_checkpoints,
    code_fingerprint,
    find_resumable,
    rng_states,
    run_fingerprint,
    save_checkpoint,
    shaping_settings,
)
from src.train.reporting import generate_samples, unigram_perplexity, write_metrics, write_plots
from src.train.tracking import RunTracker, experiment_name, flatten, run_tags, tracking_uri
from src.utils.files import atomic_directory, sha256_file
from src.utils.typed_config import as_plain_dict

log = logging.getLogger(__name__)


@dataclass
class Start:
    """Everything decided before training starts: data, tokenizer, and where to resume from."""

    token_dir: Path
    manifest: dict[str, Any]
    manifest_sha: str
    tokenizer: Any
    settings: dict[str, str]
    inputs: dict[str, str]
    fingerprint: str
    resumed: dict[str, Any] | None = None

    @property
    def step(self) -> int:
        return self.resumed["step"] if self.resumed else 0

    @property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary(self.manifest["tokenizer"]["vocab_size"], self.manifest["tokenizer"]["eos_id"])


#: Saves one checkpoint: (trainer, step, state). Every rank calls it; only rank 0 has a state.
Persist = Callable[[L.Trainer, int, "dict[str, Any] | None"], None]


@dataclass(frozen=True)
class Placement:
    """Where the Trainer runs (one process, or a Ray worker group) and where its checkpoints go."""

    trainer_options: dict[str, Any]
    persist: Persist
    prepare: Callable[[L.Trainer], L.Trainer] = field(default=lambda trainer: trainer)


@dataclass
class Outcome:
    """What training produced, for the outputs: the weights, the history and the final metrics."""

    module: CausalLM
    history: History
    metrics: dict[str, float]
    weights: dict[str, Any]


def fit(params: Params, root: Path = PROJECT_ROOT) -> dict[str, float]:
    """Train (or resume) as ``params`` says; return the final metrics (also in ``metrics.json``).

    ``ray.use_ray`` is the only switch: Ray Train runs the same :func:`train` on
    its workers (see :mod:`src.train.distributed`).
    """
    if params.ray.use_ray:
        from src.train.distributed import fit_on_ray

        return fit_on_ray(params, root)
    start = prepare(params, root)
    checkpoint_dir = resolve_path(params.paths.checkpoint_dir, root)
    start.resumed = _local_resume(params, start, checkpoint_dir)
    tracker = open_run(params, root, start)  # before seeding: MLflow draws run names from ``random``

    def persist(trainer: L.Trainer, step: int, state: dict[str, Any] | None) -> None:
        if state is not None:
            path = save_checkpoint(checkpoint_dir, step, state, keep=params.train.keep_checkpoints)
            log.info("checkpoint %s", display_path(path))

    placement = Placement({"accelerator": params.train.accelerator, "devices": 1}, persist)

    def run() -> dict[str, float]:
        outcome = train(params, root, start, tracker, placement)
        write_outputs(params, root, outcome, start.tokenizer, tracker)
        return outcome.metrics

    return run_tracked(tracker, run)


def run_tracked(tracker: RunTracker, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run ``run`` and mark the MLflow run FINISHED, FAILED or KILLED (Ctrl-C) accordingly."""
    status = "FAILED"
    try:
        metrics = run()
        status = "FINISHED"
        return metrics
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.finish(status)


def prepare(params: Params, root: Path) -> Start:
    """Read the tokenized data's manifest and tokenizer and fingerprint the run (no resume decided yet)."""
    from transformers import AutoTokenizer

    token_dir = params.paths.tokenized_dir(params.tokenize.tokenizer, root)
    manifest = read_token_manifest(token_dir)
    manifest_sha = sha256_file(token_dir / MANIFEST)
    settings = flatten(as_plain_dict(params))
    inputs = {
        "tokenized data": manifest_sha,
        "code": code_fingerprint(PROJECT_ROOT / "src"),
    }  # the running code
    fingerprint = run_fingerprint(settings, inputs)
    tokenizer = AutoTokenizer.from_pretrained(str(token_dir / TOKENIZER_DIR))
    return Start(token_dir, manifest, manifest_sha, tokenizer, settings, inputs, fingerprint)


def _local_resume(params: Params, start: Start, checkpoint_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint this run may continue; checkpoints of other settings are removed."""
    resumed = None
    if params.train.resume == "auto":
        resumed, reason = find_resumable(checkpoint_dir, start.settings, start.inputs)
        log.info("resume: %s", reason)
    if resumed is None:
        clear_checkpoints(checkpoint_dir)
    return resumed


def open_run(params: Params, root: Path, start: Start) -> RunTracker:
    """Reattach to the MLflow run of an interrupted training, or create one with all params and tags.

    A run continued from the checkpoint of a finished run (the same settings
    run again, maybe as another DVC experiment) gets a run of its own, filled
    with the history the checkpoint carries, so every run is complete.
    """
    tracker = RunTracker(tracking_uri(params.mlflow, root), params.mlflow.experiment_name)
    run_name = experiment_name()
    if start.resumed and tracker.reattach(start.resumed.get("mlflow_run_id", ""), run_name):
        log.info("continuing MLflow run %s", tracker.run_id)
    else:
        tags = run_tags(start.manifest, start.manifest_sha, start.token_dir, root)
        tracker.start(run_name, tags, start.settings)
        if start.resumed:
            for metrics, step in History.from_state(start.resumed["history"]).tracked():
                tracker.log_metrics(metrics, step)
            tracker.flush()
    log.info("MLflow run %s in %s", tracker.run_id, tracker.client.tracking_uri)
    return tracker


def build_module(params: Params, root: Path, start: Start) -> CausalLM:
    """The LightningModule around a freshly built (or pretrained) causal LM."""
    model_cache = resolve_path(params.paths.model_cache, workspace_root(root))
    model = build_model(
        params.model, start.vocabulary, params.train.max_length, model_cache, params.download.hub_timeout_s
    )
    return CausalLM(model, params.train)


def train(
    params: Params, root: Path, start: Start, tracker: RunTracker | None, placement: Placement
) -> Outcome:
    """Train from ``start`` to ``train.max_steps`` and validate; every rank runs this.

    ``tracker`` is None on the ranks that log nothing (all but rank 0).
    """
    t = params.train
    L.seed_everything(t.seed, workers=True, verbose=False)
    module = build_module(params, root, start)
    if start.resumed:
        module.model.load_state_dict(start.resumed["model"])

    data = LightningDataModule(
        start.tokenizer,
        {params.tokenize.dataset: {}},
        batch_size=t.batch_size,
        max_length=t.max_length,
        seed=t.seed,
        num_workers=t.num_workers,
        tokenizer_name=params.tokenize.tokenizer,
        params=params,
    )
    windows_per_step = t.accumulate_grad_batches * t.batch_size  # per rank
    data.train_start = start.step * windows_per_step
    data.train_length = (t.max_steps - start.step) * windows_per_step

    history = History.from_state(start.resumed["history"]) if start.resumed else History()

    def save(trainer: L.Trainer, step: int) -> None:
        # Every rank takes part: a sharding strategy (FSDP) gathers the full states here.
        weights = model_weights(trainer)
        optimizer = trainer.strategy.optimizer_state(trainer.optimizers[0])
        state = None
        if trainer.is_global_zero:
            state = {
                "fingerprint": start.fingerprint,
                "settings": shaping_settings(start.settings),
                "inputs": start.inputs,
                "step": step,
                "model": weights,
                "optimizer": optimizer,
                "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
                "rng": rng_states(),
                "history": history.state(),
                "mlflow_run_id": tracker.run_id if tracker else None,
            }
            if tracker:
                tracker.flush()  # once the checkpoint exists, MLflow holds every step up to it
        placement.persist(trainer, step, state)

    callbacks: list[L.Callback] = [
        StepRecorder(
            history,
            start_step=start.step,
            max_steps=t.max_steps,
            windows_per_step=windows_per_step,
            max_length=t.max_length,
            accumulate=t.accumulate_grad_batches,
            log_metrics=tracker.log_metrics if tracker else None,
        ),
        PeriodicCheckpoint(t.checkpoint_every, start.step, save),
    ]
    if start.resumed:
        callbacks.append(RestoreTrainingState(start.resumed))
    trainer = L.Trainer(
        **placement.trainer_options,
        precision=t.precision,
        max_steps=t.max_steps - start.step,
        max_epochs=1,  # the sampler streams every remaining step's windows as one epoch
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.grad_clip or None,
        val_check_interval=t.eval_every * t.accumulate_grad_batches,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        # Bitwise reproducible on CPU; GPU kernels without a deterministic version only warn.
        deterministic=True if placement.trainer_options["accelerator"] == "cpu" else "warn",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=callbacks,
        default_root_dir=str(root / "tmp" / "lightning"),
    )
    trainer = placement.prepare(trainer)
    if start.step < t.max_steps:
        trainer.fit(module, datamodule=data)
    final = trainer.validate(module, datamodule=data, verbose=False)[0]
    val_loss = float(final["val_loss"])
    metrics = {
        "train_loss": history.train[-1]["train_loss"] if history.train else math.nan,
        "val_loss": val_loss,
        "val_perplexity": math.exp(min(val_loss, 700.0)),
        "unigram_perplexity": unigram_perplexity(data.train_tokens, data.val_tokens, start.vocabulary.size),
        "tokens_per_s": history.tokens_seen / history.train_seconds if history.train_seconds else math.nan,
        "steps": t.max_steps,
        "tokens_seen": history.tokens_seen,
    }
    return Outcome(module, history, metrics, model_weights(trainer))


def model_weights(trainer: L.Trainer) -> dict[str, Any]:
    """The causal LM's full weights, gathered by the strategy (call on every rank)."""
    prefix = "model."
    state = trainer.strategy.lightning_module_state_dict()
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def write_outputs(params: Params, root: Path, outcome: Outcome, tokenizer: Any, tracker: RunTracker) -> None:
    """The model folder, metrics.json, plots and the text sample, each mirrored to MLflow."""
    metrics = outcome.metrics
    model_dir = resolve_path(params.paths.model_dir, root)
    model = outcome.module.model.cpu()
    with atomic_directory(model_dir) as staging:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
    write_metrics(resolve_path(params.paths.metrics_file, root), metrics)
    plots_dir = resolve_path(params.paths.plots_dir, root)
    write_plots(plots_dir, outcome.history)
    samples = generate_samples(
        model, tokenizer, params.train.sample_prompt, params.train.sample_tokens, params.train.seed
    )
    log.info("sample after training:\n%s", samples)
    # The same keys as metrics.json at the last step: the run's latest values equal the file.
    tracker.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, metrics["steps"], flush=True)
    (root / "tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root / "tmp") as scratch:
        sample_file = Path(scratch) / "samples.txt"
        sample_file.write_text(samples, encoding="utf-8")
        tracker.log_artifact(sample_file)
    tracker.log_artifacts(model_dir, "model")
    tracker.log_artifacts(plots_dir, "plots")
    log.info(
        "val perplexity %.1f (unigram baseline %.1f), %s tokens at %.0f tokens/s; see the runs: make ui",
        metrics["val_perplexity"],
        metrics["unigram_perplexity"],
        f"{metrics['tokens_seen']:,}",
        metrics["tokens_per_s"],
    )
