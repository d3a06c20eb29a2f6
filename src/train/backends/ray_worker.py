"""What each Ray Train worker runs: rebuild the typed config, resume, train on its rank, report.

Ray starts :func:`worker_loop` in every worker process of the group with the plain-dict config the
driver (:mod:`.ray_train`) built. Rank 0 logs into the driver's MLflow run by id, tells the
driver's progress actor each step, and returns the final weights; every rank reports its
checkpoints to Ray Train (only rank 0 hands over the files).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from src.config import Params, parse_params
from src.errors import first_line
from src.train.checkpoints import (
    CheckpointState,
    DamagedCheckpointError,
    read_state,
    write_state,
)
from src.train.loop import Placement, train_on_rank
from src.train.run_inputs import prepare_run_inputs
from src.train.tracking import RunTracker

log = logging.getLogger(__name__)

#: ``ray.strategy`` -> the Ray Lightning strategy class.
STRATEGIES = {"ddp": "RayDDPStrategy", "fsdp": "RayFSDPStrategy", "deepspeed": "RayDeepSpeedStrategy"}


#: The file inside each Ray checkpoint folder: the same state as a single-process checkpoint.
STATE_FILE = "state.ckpt"

#: The resource Ray gives the head node alone.
HEAD_NODE_RESOURCE = "node:__internal_head__"


class TrainingProgress:
    """A small Ray actor the driver owns for one ``trainer.fit``: the newest step rank 0 finished, and
    how many times the worker group has started.

    Ray restarts a failed worker group from the newest checkpoint without telling the workers why;
    with this the new rank 0 can say what happened (:func:`restart_line`), and the driver can say at
    which step a run it could not restart failed.
    """

    def __init__(self) -> None:
        self.step, self.starts = 0, 0

    def advanced(self, step: int) -> None:
        self.step = step

    def group_started(self) -> tuple[int, int]:
        """Called by rank 0 whenever a worker group starts: (the step reached before, restarts so far)."""
        self.starts += 1
        return self.step, self.starts - 1

    def reached(self) -> int:
        return self.step


def restart_line(failed_at: int, resumed_at: int, restarts: int, max_failures: int) -> str:
    """What rank 0 of a restarted worker group logs: where the group failed and where it goes on."""
    allowed = "unlimited" if max_failures < 0 else str(max_failures)
    start = f"step {resumed_at}" if resumed_at else "the start (no checkpoint yet)"
    return f"worker failed at step {failed_at}; restarting from {start} ({restarts} of {allowed} retries)"


def worker_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """One Ray Train worker: rebuild the config, resume from Ray's checkpoint, train; rank 0 returns."""
    import ray.train

    params = parse_params(config["params"])
    root = Path(config["root"])
    inputs = prepare_run_inputs(params, root)
    checkpoint = ray.train.get_checkpoint()  # set when Ray restarts the group after a worker failure
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            try:
                inputs = inputs.resuming(read_state(Path(folder) / STATE_FILE))
            except DamagedCheckpointError as error:  # then the newest the driver verified, as a new run
                log.warning("Ray's latest checkpoint is not resumed: %s", error)
    if inputs.resumed is None and config["resume_from"]:  # a new run of the same settings: the one
        inputs = inputs.resuming(read_state(Path(config["resume_from"])))  # the driver found and logged
    threads = match_cpu_threads_to_ray(os.environ)
    context = ray.train.get_context()
    rank = context.get_world_rank()
    node = ray.get_runtime_context().get_node_id()
    log.info("rank %d of %d on node %s (%d CPU threads)", rank, context.get_world_size(), node[:12], threads)
    progress = config["progress"]
    if rank == 0:
        try:
            failed_at, restarts = ray.get(progress.group_started.remote(), timeout=60)
        except Exception as error:  # the record is only for the log: training goes on without it
            log.warning("could not read the run's progress record (%s)", first_line(error, 200))
            failed_at, restarts = 0, 0
        if restarts:
            log.warning(restart_line(failed_at, inputs.step, restarts, params.ray.max_failures))
    tracker = RunTracker(config["tracking_uri"], None, run_id=config["run_id"]) if rank == 0 else None
    placement = _ray_placement(params, root, progress, inputs.step)
    outcome = train_on_rank(params, root, inputs, tracker, placement)
    if tracker is None:
        return None
    tracker.flush()
    return {
        # Ray refuses tensors in return values; NumPy arrays travel (bfloat16 has no NumPy type).
        "model": {key: _to_numpy(value) for key, value in outcome.weights.items()},
        "history": outcome.history.state(),
        "metrics": outcome.metrics,
    }


def match_cpu_threads_to_ray(environ: Mapping[str, str]) -> int:
    """Sets PyTorch's CPU threads to ``OMP_NUM_THREADS`` where it is set, and returns them.

    Ray sets that variable in each worker to the CPUs it granted the worker (unless the user set
    it), but only once the worker process runs, after PyTorch has sized its thread pool to every
    core of the machine. Left alone, N workers on a node run N times as many threads as it has
    cores, and each one's forward and backward slow down several times over.
    """
    value = environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:  # not OpenMP's nested form ("4,2"): PyTorch's own then
        torch.set_num_threads(int(value))
    return torch.get_num_threads()


def _to_numpy(tensor: torch.Tensor) -> Any:
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


class ReportProgress(L.Callback):
    """Rank 0 tells the progress actor each optimizer step it finished (a message, never waited
    on; once per step, not per accumulated micro-batch)."""

    def __init__(self, progress: Any, start_step: int) -> None:
        self.progress, self.start_step = progress, start_step
        self.sent = start_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = self.start_step + trainer.global_step
        if trainer.is_global_zero and step != self.sent:
            self.progress.advanced.remote(step)
            self.sent = step


def _ray_placement(params: Params, root: Path, progress: Any, start_step: int) -> Placement:
    import ray.train
    import ray.train.lightning as ray_lightning

    strategy = getattr(ray_lightning, STRATEGIES[params.ray.strategy])()

    def report(trainer: Any, step: int, state: CheckpointState | None) -> None:
        # Every rank reports (it is a barrier); only rank 0 hands Ray a checkpoint.
        folder_name = f"checkpoint_{step:09d}"
        if state is None:
            ray.train.report({"step": step}, checkpoint=None, checkpoint_dir_name=folder_name)
            return
        (root / "tmp").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root / "tmp") as folder:
            write_state(Path(folder) / STATE_FILE, state)
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
    return Placement(
        options,
        report,
        wrap_trainer=ray_lightning.prepare_trainer,
        callbacks=(ReportProgress(progress, start_step),),
    )
