"""The Ray cluster a training run uses: a local one started for the run, or one at ``ray.address``.

A local cluster keeps its session files in the project (``tmp/ray``), needs no
auth token, and is shut down however the run ends; a cluster the pipeline did
not start is only connected to.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from src.config import RayConfig, available_cores
from src.errors import ConfigError, PipelineError, first_line
from src.paths import PROJECT_ROOT
from src.utils.faults import HANG_AT, KILL_AT

#: Set before Ray is imported (it reads them then); values the user set win.
RAY_ENVIRONMENT = {
    "RAY_AUTH_MODE": "disabled",  # a local cluster needs no token, and Ray would write one into ~/.ray
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_DEDUP_LOGS": "0",  # every worker's lines as they come, not folded minutes later
    "RAY_COLOR_PREFIX": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",  # each report waits for this poll (default 2 s)
}

#: Left to a cluster the pipeline did not start: it may use token authentication (its token in
#: ``~/.ray``), and the driver must then present that token.
LOCAL_ONLY = {"RAY_AUTH_MODE"}

#: Unix socket paths are limited to 107 bytes; Ray adds about 64 to its temp dir.
_MAX_TEMP_DIR = 43


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


def worker_environment() -> dict[str, str]:
    """What workers need from the driver's environment: the code, caches, quiet libraries, and the
    fault-injection points (src.utils.faults)."""
    names = ("HF_", "MLFLOW_", "MKL_", "TORCHINDUCTOR_", "DVC_", "TOKENIZERS_", "DO_NOT_TRACK")
    env = {k: v for k, v in os.environ.items() if k.startswith(names) or k in (KILL_AT, HANG_AT)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return env


@contextmanager
def ray_cluster(config: RayConfig, root: Path) -> Iterator[None]:
    """Connect to ``ray.address``, or start a local cluster that is shut down however the run ends."""
    for key, value in RAY_ENVIRONMENT.items():
        if key not in LOCAL_ONLY or not config.address:
            os.environ.setdefault(key, value)
    import ray

    runtime_env = {
        "env_vars": worker_environment(),
        "worker_process_setup_hook": f"{__name__}.quiet_worker",
    }
    if config.address:
        try:
            ray.init(address=config.address, runtime_env=runtime_env, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise PipelineError(
                f"ray.address: cannot connect to {config.address} ({first_line(error, 200)}); "
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
            check_resources(config, ray.cluster_resources())
        yield
    finally:
        ray.shutdown()


def check_resources(config: RayConfig, available: dict[str, float], *, only: tuple[str, ...] = ()) -> None:
    """A local cluster cannot grow: refuse a worker group it cannot place (Ray would wait forever).

    With ``only``, just those resources are checked (before the cluster starts, this machine's
    cores and GPUs are known; other resources only Ray can count).
    """
    per_worker = dict(config.resources_per_worker)
    if config.use_gpu:
        per_worker.setdefault("GPU", 1.0)
    for resource, amount in per_worker.items():
        if only and resource not in only:
            continue
        needed = amount * config.num_workers
        if needed > available.get(resource, 0.0):
            raise ConfigError(
                f"ray.num_workers: {config.num_workers} workers x {amount:g} {resource} need {needed:g} "
                f"{resource}, this machine has {available.get(resource, 0.0):g}; lower ray.num_workers or "
                "ray.resources_per_worker, or set ray.address to a larger cluster"
            )


def local_resources() -> dict[str, float]:
    """The CPUs and GPUs a local cluster started by :func:`ray_cluster` gets from this machine."""
    import torch

    return {"CPU": float(available_cores()), "GPU": float(torch.cuda.device_count())}


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
    # CausalLM reduces its validation sums over the ranks itself before logging them.
    warnings.filterwarnings("ignore", message=r".*sync_dist=True.*distributed setting")
