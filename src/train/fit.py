"""``fit``: the one training flow behind the DVC stage and ``python src/train/train.py``.

A run trains ``train.max_steps`` optimizer steps on windows of the tokenized
data, validates every ``train.eval_every`` steps, checkpoints every
``train.checkpoint_every`` steps, and at the end writes the model folder,
``metrics.json`` and the loss-curve CSVs, all mirrored in one MLflow run. An
interrupted run started again with the same params resumes from its newest
checkpoint and ends exactly where the uninterrupted run would have.

The flow is the same wherever training runs; a backend
(:mod:`src.train.backends`: one local process, or a Ray Train worker group)
supplies the steps that differ.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

from src.config import Params
from src.data.mixture import mixture_weights
from src.data.raw_export import TRAIN
from src.errors import TrainingStopped
from src.input_guard import check_unchanged, snapshot_inputs
from src.paths import PROJECT_ROOT, display_path, resolve_path
from src.train.backends import Backend
from src.train.input_guard import train_inputs
from src.train.mlflow_store import store_errors, tracking_uri
from src.train.outputs import check_output_locations, write_outputs
from src.train.provenance import dvc_experiment_name, run_tags
from src.train.run_inputs import RunInputs, prepare_run_inputs
from src.train.stopping import StopSignals
from src.train.tracking import RunTracker
from src.utils.faults import kill_point
from src.utils.locks import LOCK_FILE, exclusive_lock
from src.utils.logging_setup import adopt_library_loggers
from src.utils.redact import redact_uri

log = logging.getLogger(__name__)


def fit(params: Params, root: Path = PROJECT_ROOT, params_file: Path | None = None) -> dict[str, float]:
    """Train (or resume) as ``params`` says; return the final metrics (also in ``metrics.json``).

    ``params_file``: where ``params`` were read from, checked again before the outputs are written
    (:mod:`src.input_guard`).
    """
    adopt_library_loggers()  # Lightning attached its own console handler when it was imported
    # A deprecation inside Lightning itself: nothing a user of this project can act on.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    backend = select_backend(params, root)
    # Start-up checks, before any checkpoint is read or any run opened: whatever can be known now
    # (an output that cannot be written, a missing GPU, tokens too short for a window) is one line
    # now, not a traceback after training.
    check_output_locations(params, root)
    backend.check()
    started_from = snapshot_inputs(train_inputs(params, root), params, params_file)
    inputs = prepare_run_inputs(params, root)
    lock = backend.configuration_folder(inputs) / LOCK_FILE
    with (
        exclusive_lock(lock, "a training of this configuration"),
        StopSignals(at_once=not backend.stops_at_step_boundary) as stop,
    ):
        inputs = inputs.resuming(backend.find_resume(inputs))
        tracker = open_run(params, root, inputs)  # before seeding: MLflow draws run names from ``random``

        def run() -> dict[str, float]:
            outcome = backend.train(inputs, tracker, stop)
            kill_point("train.trained")
            check_unchanged(started_from)  # else DVC would record what did not train
            write_outputs(params, root, outcome, inputs.tokenizer, tracker)
            backend.prune(inputs)  # only now: a failed or killed run never costs another one's checkpoints
            return outcome.metrics

        return run_tracked(tracker, run)


def select_backend(params: Params, root: Path) -> Backend:
    """Where training runs; ``ray.use_ray`` is the only switch."""
    if params.ray.use_ray:
        from src.train.backends.ray_train import RayBackend

        return RayBackend(params, root)
    from src.train.backends.local import LocalBackend

    return LocalBackend(params, root)


def run_tracked(tracker: RunTracker, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run ``run`` and mark the MLflow run FINISHED, FAILED or KILLED (stopped by a signal) accordingly.

    A run that fails is marked only if the store answers at once: the error to report is the
    one that stopped it, not a tracking server that went away too.
    """
    try:
        metrics = run()
    except BaseException as error:
        stopped = isinstance(error, KeyboardInterrupt | TrainingStopped)
        tracker.abandon("KILLED" if stopped else "FAILED")
        raise
    with store_errors(tracker.client.tracking_uri, ending=True):
        tracker.finish("FINISHED")
    return metrics


def open_run(params: Params, root: Path, inputs: RunInputs) -> RunTracker:
    """Reattach to the MLflow run of an interrupted training, or create one with all params and tags.

    A run continued from the checkpoint of a finished run (the same settings
    run again, maybe as another DVC experiment) gets a run of its own, filled
    with the history the checkpoint carries, so every run is complete.
    """
    uri = tracking_uri(params.mlflow, root)
    tracker = RunTracker(uri, params.mlflow.experiment_name)
    run_name = dvc_experiment_name()
    resumed = inputs.resumed
    with store_errors(uri):  # a store that opens but cannot be written (read-only) fails here
        if resumed and tracker.reattach(resumed.mlflow_run_id or "", run_name):
            log.info("continuing MLflow run %s", tracker.run_id)
            tracker.log_missing(resumed.history.tracked())
        else:
            tags = run_tags(inputs.sources, root)
            tracker.start(run_name, tags, inputs.settings)
            log_training_data(params, root, inputs, tracker)
            if resumed:
                tracker.log_missing(resumed.history.tracked())
        for orphan in tracker.end_orphans():
            log.info(
                "MLflow run %s was left RUNNING by a training that no longer runs: marked KILLED", orphan
            )
    log.info("MLflow run %s in %s", tracker.run_id, redact_uri(tracker.client.tracking_uri))
    return tracker


def log_training_data(params: Params, root: Path, inputs: RunInputs, tracker: RunTracker) -> None:
    """Each token folder as one of the run's MLflow datasets: named like ``tokenized/bpe/kjv``, with
    its token manifest's hash as digest, the export it was made from as source, and its weight."""
    cache_dir = resolve_path(params.paths.cache_dir, root)
    weights = mixture_weights(
        [source.name for source in inputs.sources],
        [source.manifest.splits[TRAIN].tokens for source in inputs.sources],
        params.train.mixture,
    )
    for source, weight in zip(inputs.sources, weights, strict=True):
        manifest = source.manifest
        profile: dict[str, object] = {
            f"{split}_tokens": info.tokens for split, info in manifest.splits.items()
        }
        profile.update(
            tokenizer=manifest.tokenizer.name, vocab_size=manifest.tokenizer.vocab_size, weight=weight
        )
        tracker.log_dataset(
            name=source.path.relative_to(cache_dir).as_posix(),
            digest=source.manifest_sha256,
            source=display_path(params.paths.raw_dir(root) / manifest.source.dataset, root),
            profile=profile,
        )
