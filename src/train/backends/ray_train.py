"""Ray Train: the same training on a group of workers, driven from the stage's process.

The driver (the DVC stage or ``python src/train/train.py`` with
``ray.use_ray: true``) creates the MLflow run, starts a local Ray cluster (or
connects to ``ray.address``, see :mod:`.ray_cluster`), and hands every worker the
params as a plain dict. Each worker rebuilds the typed config and runs
:func:`src.train.loop.train_on_rank` under a Ray Lightning strategy; each rank
reads its own windows of the memory-mapped tokens. Rank 0 logs into the
driver's run by id and reports a checkpoint to Ray Train every
``train.checkpoint_every`` steps; a worker failure restarts the group from the
newest one (``ray.max_failures``), and a new run with the same settings resumes
from it. Rank 0 returns the final weights, and the driver writes the same
outputs as a single-process run.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from src.config import Params
from src.errors import ConfigError, PipelineError, first_line
from src.paths import display_path, resolve_path
from src.train.backends.ray_cluster import check_resources, local_resources, ray_cluster
from src.train.backends.ray_worker import (
    HEAD_NODE_RESOURCE,
    STATE_FILE,
    STRATEGIES,
    TrainingProgress,
    worker_loop,
)
from src.train.checkpoints import (
    CheckpointState,
    configuration_folder,
    nearest_other_configuration,
    newest_readable,
    prune_configurations,
)
from src.train.history import History
from src.train.loop import Outcome, build_module
from src.train.run_inputs import RunInputs
from src.train.stopping import StopSignals
from src.train.tracking import RunTracker
from src.utils.files import check_writable
from src.utils.locks import LOCK_FILE
from src.utils.typed_config import as_plain_dict

log = logging.getLogger(__name__)

#: The package a strategy needs beyond Ray.
STRATEGY_PACKAGES = {"deepspeed": "deepspeed"}


#: Strategies that shard over accelerators only (Lightning: "FSDP needs a non-CPU accelerator device").
GPU_ONLY_STRATEGIES = {"fsdp"}


def check_strategy(strategy: str, use_gpu: bool = False) -> None:
    """Fail before any cluster starts when the strategy's package is missing, or it needs GPU workers
    that ``ray.use_gpu`` does not ask for (Lightning would say so at step 0, minutes later)."""
    if strategy in GPU_ONLY_STRATEGIES and not use_gpu:
        raise ConfigError(
            f"ray.strategy: {strategy} runs on GPU workers only, and ray.use_gpu is false; set "
            "ray.use_gpu: true (on a machine or cluster with GPUs), or ray.strategy: ddp on CPUs"
        )
    package = STRATEGY_PACKAGES.get(strategy)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"ray.strategy: {strategy} needs the {package} package, which is not installed; "
            f"pip install {package}, or use ddp or fsdp"
        )


def storage_location(params: Params, root: Path) -> str:
    """``ray.storage_path`` as Ray wants it (absolute path or URI); default ``<checkpoint_dir>/ray``."""
    path = params.ray.storage_path
    if "://" in path:
        return path
    if path:
        return str(resolve_path(path, root))
    return str(resolve_path(params.paths.checkpoint_dir, root) / "ray")


#: One Ray run per configuration, ``train-<settings hash>``: Ray resumes a run of the same name.
RAY_PREFIX = "train-"

#: Ray's record of the checkpoints it registered, in the run's folder.
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"

_CHECKPOINT_DIR = re.compile(r"checkpoint_\d+")


def run_name(fingerprint: str) -> str:
    """One Ray run per set of settings: Ray resumes a run of the same name from its newest checkpoint."""
    return configuration_folder(Path(), fingerprint, RAY_PREFIX).name


class RayBackend:
    """Training on ``ray.num_workers`` Ray Train workers, checkpoints in ``ray.storage_path``."""

    def __init__(self, params: Params, root: Path) -> None:
        self.params, self.root = params, root
        self.storage = storage_location(params, root)
        self.resume_from: Path | None = None
        """The checkpoint the driver found (and told MLflow about): the workers start from it too."""

    def check(self) -> None:
        """Before anything starts: the strategy's package, the GPUs and cores a local cluster
        would get, and a local checkpoint folder that can be written."""
        config = self.params.ray
        check_strategy(config.strategy, config.use_gpu)
        if not config.address:
            if config.use_gpu and not torch.cuda.is_available():
                raise ConfigError(
                    "ray.use_gpu: true, but this machine has no GPU for the local Ray cluster; set "
                    "ray.use_gpu: false, or ray.address to a cluster with GPUs"
                )
            check_resources(config, local_resources(), only=("CPU", "GPU"))
        if "://" not in self.storage:
            key = "ray.storage_path" if config.storage_path else "paths.checkpoint_dir"
            check_writable(key, Path(self.storage), kind="folder", into=True)

    def find_resume(self, inputs: RunInputs) -> CheckpointState | None:
        """The newest Ray checkpoint of this run (what the workers will resume from), for MLflow.

        Runs of other settings are left alone (pruned after a finished run); with
        ``train.resume: never`` this run's own checkpoints go. Remote storage is left to Ray.
        """
        if "://" in self.storage:
            return None
        current = self.configuration_folder(inputs)
        if self.params.train.resume == "never" and current.exists():
            for path in current.iterdir():  # Ray would resume from them otherwise; the lock stays
                if path.name != LOCK_FILE:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        found = newest_readable(sorted(current.glob(f"checkpoint_*/{STATE_FILE}")))
        self.resume_from, state = found if found else (None, None)
        if state is None:  # and what differs from the checkpoints kept (a changed global batch, say)
            base = Path(self.storage)
            change = nearest_other_configuration(base, current, inputs.shaping, inputs.inputs, RAY_PREFIX)
            log.info("resume: %s", change.replace("checkpoint", "Ray checkpoint", 1))
        else:
            log.info("resume: from the Ray checkpoint at step %d in %s", state.step, display_path(current))
        return state

    def prune(self, inputs: RunInputs) -> None:
        if "://" in self.storage:
            return
        base = Path(self.storage)
        current = configuration_folder(base, inputs.fingerprint, RAY_PREFIX)
        for path in prune_configurations(base, current, self.params.train.keep_configurations, RAY_PREFIX):
            log.info("removed the Ray checkpoints %s (train.keep_configurations)", display_path(path))
        for path in prune_unregistered(current, self.params.train.keep_checkpoints):
            log.info("removed %s (train.keep_checkpoints)", display_path(path))

    #: A stop ends the driver at once (``KeyboardInterrupt``): the cluster stops with it and the
    #: workers resume from their last periodic checkpoint.
    stops_at_step_boundary = False

    def configuration_folder(self, inputs: RunInputs) -> Path:
        """The Ray run's folder in local storage; for remote storage, its name in paths.checkpoint_dir
        (where the lock of one training at a time lives)."""
        if "://" in self.storage:
            local = resolve_path(self.params.paths.checkpoint_dir, self.root)
            return configuration_folder(local, inputs.fingerprint, RAY_PREFIX)
        return configuration_folder(Path(self.storage), inputs.fingerprint, RAY_PREFIX)

    def train(self, inputs: RunInputs, tracker: RunTracker, stop: StopSignals | None = None) -> Outcome:
        with ray_cluster(self.params.ray, self.root):
            payload = self._fit_workers(run_name(inputs.fingerprint), tracker)
        weights = {key: torch.tensor(value) for key, value in payload["model"].items()}  # a copy: writable
        module = build_module(self.params, self.root, inputs)
        module.model.load_state_dict(weights)
        return Outcome(module, History.from_state(payload["history"]), payload["metrics"], weights)

    def _fit_workers(self, name: str, tracker: RunTracker) -> dict[str, Any]:
        import ray.exceptions
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
        from ray.train.torch import TorchTrainer

        params, config = self.params, self.params.ray
        progress = _progress_actor()
        trainer = TorchTrainer(
            worker_loop,
            train_loop_config={
                "params": as_plain_dict(params),
                "root": str(self.root),
                "tracking_uri": tracker.client.tracking_uri,
                "run_id": tracker.run_id,
                "resume_from": str(self.resume_from) if self.resume_from else None,
                "progress": progress,
            },
            scaling_config=ScalingConfig(
                num_workers=config.num_workers,
                use_gpu=config.use_gpu,
                resources_per_worker=dict(config.resources_per_worker),
            ),
            run_config=RunConfig(
                name=name,
                storage_path=self.storage,
                failure_config=FailureConfig(max_failures=config.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=params.train.keep_checkpoints),
            ),
        )
        log.info(
            "Ray Train: %d workers (%s), checkpoints in %s/%s",
            config.num_workers,
            STRATEGIES[config.strategy],
            self.storage,
            name,
        )
        try:
            result = trainer.fit()
        except (TrainingFailedError, ray.exceptions.RayActorError) as error:
            raise PipelineError(self._failure_message(error, progress, name)) from None
        return result.return_value

    def _failure_message(self, error: BaseException, progress: Any, name: str) -> str:
        """One line: where the workers failed, why, and the checkpoint a new run resumes from."""
        import ray

        try:
            reached = f" at step {ray.get(progress.reached.remote(), timeout=10)}"
        except Exception:  # the actor went with its node: say what is known
            reached = ""
        retries = self.params.ray.max_failures
        after = f" after {retries} restart{'s' * (retries != 1)}" if retries > 0 else ""
        line = f"ray: training failed{reached}{after}: {failure_line(error)}"
        newest = None
        if "://" not in self.storage:
            found = sorted(Path(self.storage, name).glob(f"checkpoint_*/{STATE_FILE}"))
            newest = found[-1].parent if found else None
        if newest is not None:
            step = int(newest.name.rsplit("_", 1)[1])
            return (
                f"{line}; the checkpoint at step {step} is kept: run the same command again to resume "
                "from it (ray.max_failures: restarts without stopping)"
            )
        return f"{line} (worker logs above)"


def prune_unregistered(folder: Path, keep: int) -> list[Path]:
    """After a finished run: keep the newest ``keep`` checkpoints of a configuration's Ray run folder.

    Ray prunes only the checkpoints it registered. A run stopped right after a checkpoint was
    copied to storage, before Ray recorded it, leaves that checkpoint behind for good, beside the
    newer ones of the run that resumed. Older checkpoints than the newest ``keep`` go, unless
    Ray's own record still names them (Ray refuses to start a run whose recorded checkpoints
    are missing).
    """
    found = sorted(p for p in folder.glob("checkpoint_*") if p.is_dir() and _CHECKPOINT_DIR.fullmatch(p.name))
    snapshot = folder / RAY_SNAPSHOT
    recorded = snapshot.read_text(encoding="utf-8") if snapshot.is_file() else ""
    stale = [path for path in found[: max(len(found) - keep, 0)] if f'"{path.name}"' not in recorded]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def failure_line(error: BaseException) -> str:
    """The original exception of the first failed rank, in one line."""
    failures = getattr(error, "worker_failures", None)
    if failures:
        # A worker that died takes its peers' collectives down with it ("connection reset"): the
        # one that died is the cause.
        rank, failure = min(failures.items(), key=lambda item: (not _lost(item[1]), item[0]))
        cause = getattr(failure, "cause", None) or failure
        return f"rank {rank}: {type(cause).__name__}: {first_line(cause)}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__


def _lost(failure: BaseException) -> bool:
    """A worker process that died or stopped answering (not an error its code raised)."""
    return any(word in type(failure).__name__ for word in ("Died", "HealthCheck"))


def _progress_actor() -> Any:
    """A :class:`TrainingProgress` on the cluster's head node: it outlives any worker node (a
    cluster without its head is gone anyway). Not "the driver's node": on a machine that hosts
    several nodes the driver may attach to any of them."""
    import ray

    head = {HEAD_NODE_RESOURCE: 0.001}
    return ray.remote(num_cpus=0, resources=head)(TrainingProgress).remote()
