"""Ray Train: the same training on a group of workers, driven from the stage's process.

The driver (the DVC stage or ``python src/train/train.py`` with
``ray.use_ray: true``) creates the MLflow run, starts a local Ray cluster (or
connects to ``ray.address``), and hands every worker the params as a plain
dict. Each worker rebuilds the typed config and runs :func:`src.train.fit.train`
under a Ray Lightning strategy; each rank reads its own windows of the
memory-mapped tokens. Rank 0 logs into the driver's run by id and reports a
checkpoint to Ray Train every ``train.checkpoint_every`` steps; a worker failure
restarts the group from the newest one (``ray.max_failures``), and a new run
with the same settings resumes from it. Rank 0 returns the final weights, and
the driver writes the same outputs as a single-process run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from src.config import Params, RayConfig, available_cores, parse_params
from src.errors import ConfigError, PipelineError
from src.paths import PROJECT_ROOT, display_path, resolve_path
from src.train.callbacks import History
from src.train.checkpoints import describe_change, newest_readable
from src.train.fit import (
    Outcome,
    Placement,
    Start,
    build_module,
    open_run,
    prepare,
    run_tracked,
    train,
    write_outputs,
)
from src.train.tracking import RunTracker
from src.utils.typed_config import as_plain_dict

log = logging.getLogger(__name__)

#: ``ray.strategy`` -> the Ray Lightning strategy class, and the package it needs beyond Ray.
STRATEGIES = {"ddp": "RayDDPStrategy", "fsdp": "RayFSDPStrategy", "deepspeed": "RayDeepSpeedStrategy"}
STRATEGY_PACKAGES = {"deepspeed": "deepspeed"}

#: The file inside each Ray checkpoint folder: the same state as a single-process checkpoint.
STATE_FILE = "state.ckpt"

#: Set before Ray is imported (it reads them then); values the user set win.
RAY_ENVIRONMENT = {
    "RAY_AUTH_MODE": "disabled",  # a local cluster needs no token, and Ray would write one into ~/.ray
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_DEDUP_LOGS": "0",  # every worker's lines as they come, not folded minutes later
    "RAY_COLOR_PREFIX": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",  # each report waits for this poll (default 2 s)
}

#: Unix socket paths are limited to 107 bytes; Ray adds about 64 to its temp dir.
_MAX_TEMP_DIR = 43


def check_strategy(strategy: str) -> None:
    """Fail before any cluster starts when the strategy's package is missing."""
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


def run_name(fingerprint: str) -> str:
    """One Ray run per set of settings: Ray resumes a run of the same name from its newest checkpoint."""
    return f"train-{fingerprint[:16]}"


def fit_on_ray(params: Params, root: Path) -> dict[str, float]:
    """Train on a Ray worker group; outputs, MLflow run and return value as :func:`src.train.fit.fit`."""
    check_strategy(params.ray.strategy)
    start = prepare(params, root)
    storage = storage_location(params, root)
    name = run_name(start.fingerprint)
    start.resumed = _resume_state(params, start, storage, name)
    tracker = open_run(params, root, start)

    def run() -> dict[str, float]:
        with ray_cluster(params.ray, root):
            payload = _fit_workers(params, root, storage, name, tracker)
        weights = {key: torch.from_numpy(value) for key, value in payload["model"].items()}
        module = build_module(params, root, start)
        module.model.load_state_dict(weights)
        outcome = Outcome(module, History.from_state(payload["history"]), payload["metrics"], weights)
        write_outputs(params, root, outcome, start.tokenizer, tracker)
        return outcome.metrics

    return run_tracked(tracker, run)


def _resume_state(params: Params, start: Start, storage: str, name: str) -> dict[str, Any] | None:
    """The newest Ray checkpoint of this run (what the workers will resume from), for MLflow.

    Runs of other settings are removed, like single-process checkpoints; with
    ``train.resume: never`` this run's own checkpoints go too. Remote storage is
    left to Ray.
    """
    if "://" in storage:
        return None
    base, current = Path(storage), Path(storage) / name
    if params.train.resume == "never" and current.exists():
        shutil.rmtree(current)
    for other in sorted(base.glob("train-*")):
        if other != current and other.is_dir():
            state = _newest_state(other)
            change = describe_change(state, start.settings, start.inputs) if state else "unknown"
            log.info("resume: removing %s, made with other settings (%s)", display_path(other), change)
            shutil.rmtree(other)
    state = _newest_state(current)
    if state is None:
        log.info("resume: no Ray checkpoint of these settings yet")
    else:
        log.info("resume: from the Ray checkpoint at step %d in %s", state["step"], display_path(current))
    return state


def _newest_state(run_dir: Path) -> dict[str, Any] | None:
    found = newest_readable(sorted(run_dir.glob(f"checkpoint_*/{STATE_FILE}")))
    return found[1] if found else None


def short_temp_dir(root: Path) -> Path:
    """``tmp/ray`` in the project, reached through a short link in the system temp dir when its
    path is too long for Ray's Unix sockets (the files still live in the project)."""
    target = root / "tmp" / "ray"
    target.mkdir(parents=True, exist_ok=True)
    if len(str(target)) <= _MAX_TEMP_DIR:
        return target
    digest = hashlib.sha256(str(target).encode()).hexdigest()[:12]
    link = Path(tempfile.gettempdir()) / f"lmpipe-ray-{digest}"
    if not (link.is_symlink() and link.resolve() == target.resolve()):
        link.unlink(missing_ok=True)
        link.symlink_to(target, target_is_directory=True)
    return link


def _clear_old_sessions(temp_dir: Path) -> None:
    """Session folders of earlier runs are only their logs; keep the folder from growing."""
    for entry in temp_dir.iterdir():
        if entry.name.startswith("session_"):
            if entry.is_symlink():
                entry.unlink()
            else:
                shutil.rmtree(entry, ignore_errors=True)


def worker_environment(root: Path) -> dict[str, str]:
    """What workers need from the driver's environment: the code, caches, quiet libraries."""
    names = ("HF_", "MLFLOW_", "MKL_", "TORCHINDUCTOR_", "DVC_", "TOKENIZERS_", "DO_NOT_TRACK")
    env = {k: v for k, v in os.environ.items() if k.startswith(names)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return env


@contextmanager
def ray_cluster(config: RayConfig, root: Path) -> Iterator[None]:
    """Connect to ``ray.address``, or start a local cluster that is shut down however the run ends."""
    for key, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    import ray

    runtime_env = {
        "env_vars": worker_environment(root),
        "worker_process_setup_hook": "src.train.distributed.quiet_worker",
    }
    if config.address:
        try:
            ray.init(address=config.address, runtime_env=runtime_env, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise PipelineError(
                f"ray.address: cannot connect to {config.address} ({str(error).splitlines()[0][:200]}); "
                'start the cluster (ray start --head), or set ray.address to "" for a local one'
            ) from None
    else:
        temp_dir = short_temp_dir(root)
        _clear_old_sessions(temp_dir)
        ray.init(
            address="local",
            num_cpus=available_cores(),
            include_dashboard=False,
            _temp_dir=str(temp_dir),
            runtime_env=runtime_env,
            logging_level=logging.WARNING,
        )
    try:
        if not config.address:
            _check_resources(config, ray.cluster_resources())
        yield
    finally:
        ray.shutdown()


def _check_resources(config: RayConfig, available: dict[str, float]) -> None:
    """A local cluster cannot grow: refuse a worker group it cannot place (Ray would wait forever)."""
    per_worker = dict(config.resources_per_worker)
    if config.use_gpu:
        per_worker.setdefault("GPU", 1.0)
    for resource, amount in per_worker.items():
        needed = amount * config.num_workers
        if needed > available.get(resource, 0.0):
            raise ConfigError(
                f"ray.num_workers: {config.num_workers} workers x {amount:g} {resource} need {needed:g} "
                f"{resource}, this machine has {available.get(resource, 0.0):g}; lower ray.num_workers or "
                "ray.resources_per_worker, or set ray.address to a larger cluster"
            )


def _fit_workers(params: Params, root: Path, storage: str, name: str, tracker: RunTracker) -> dict[str, Any]:
    import ray.exceptions
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    config = params.ray
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            "params": as_plain_dict(params),
            "root": str(root),
            "tracking_uri": tracker.client.tracking_uri,
            "run_id": tracker.run_id,
        },
        scaling_config=ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker=dict(config.resources_per_worker),
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=params.train.keep_checkpoints),
        ),
    )
    log.info(
        "Ray Train: %d workers (%s), checkpoints in %s/%s",
        config.num_workers,
        STRATEGIES[config.strategy],
        storage,
        name,
    )
    try:
        result = trainer.fit()
    except (TrainingFailedError, ray.exceptions.RayActorError) as error:
        raise PipelineError(f"ray: training failed: {failure_line(error)} (worker logs above)") from None
    return result.return_value


def failure_line(error: BaseException) -> str:
    """The original exception of the first failed rank, in one line."""
    failures = getattr(error, "worker_failures", None)
    if failures:
        rank, failure = sorted(failures.items())[0]
        cause = getattr(failure, "cause", None) or failure
        return f"rank {rank}: {type(cause).__name__}: {str(cause).strip().splitlines()[0][:300]}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__


def worker_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """One Ray Train worker: rebuild the config, resume from Ray's checkpoint, train; rank 0 returns."""
    import ray.train

    params = parse_params(config["params"])
    root = Path(config["root"])
    start = prepare(params, root)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start.resumed = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
    rank = ray.train.get_context().get_world_rank()
    tracker = RunTracker(config["tracking_uri"], None, run_id=config["run_id"]) if rank == 0 else None
    outcome = train(params, root, start, tracker, _ray_placement(params, root))
    if tracker is None:
        return None
    tracker.flush()
    return {
        # Ray refuses tensors in return values; NumPy arrays travel (bfloat16 has no NumPy type).
        "model": {key: _to_numpy(value) for key, value in outcome.weights.items()},
        "history": outcome.history.state(),
        "metrics": outcome.metrics,
    }


def _to_numpy(tensor: torch.Tensor) -> Any:
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def _ray_placement(params: Params, root: Path) -> Placement:
    import ray.train
    import ray.train.lightning as ray_lightning

    strategy = getattr(ray_lightning, STRATEGIES[params.ray.strategy])()

    def report(trainer: Any, step: int, state: dict[str, Any] | None) -> None:
        # Every rank reports (it is a barrier); only rank 0 hands Ray a checkpoint.
        folder_name = f"checkpoint_{step:09d}"
        if state is None:
            ray.train.report({"step": step}, checkpoint=None, checkpoint_dir_name=folder_name)
            return
        (root / "tmp").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root / "tmp") as folder:
            torch.save(state, Path(folder) / STATE_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report({"step": step}, checkpoint=checkpoint, checkpoint_dir_name=folder_name)
        log.info("checkpoint at step %d reported to Ray Train", step)

    options = {
        "accelerator": "gpu" if params.ray.use_gpu else "cpu",
        "devices": "auto",
        "strategy": strategy,
        "plugins": [ray_lightning.RayLightningEnvironment()],
        "enable_progress_bar": False,  # workers' output is interleaved by Ray; rank 0 logs each eval
    }
    return Placement(options, report, prepare=ray_lightning.prepare_trainer)


def quiet_worker() -> None:
    """Runs in every Ray worker process: keep Ray's and Lightning's chatter out of the stage's output."""
    import ray.train.v2._internal.execution.context as context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)  # that logger is named by its file
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(
        logging.ERROR
    )
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
