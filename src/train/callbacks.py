"""Lightning callbacks that turn training into history, MLflow metrics and checkpoints.

Steps are counted globally: a resumed run starts a new Trainer whose own step
counter begins at 0, so every callback adds ``start_step``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from src.errors import TrainingStopped
from src.models.flops import device_peak_tflops, utilization
from src.models.metrics import TRAIN_LOSS, VAL_BPB, VAL_LOSS, VAL_PERPLEXITY, perplexity, source_of
from src.paths import display_path
from src.train.checkpoints import CheckpointState, restore_rng_states
from src.train.history import History, tracked_train_metrics
from src.train.stopping import StopSignals
from src.utils.faults import kill_point

log = logging.getLogger(__name__)


class StepRecorder(L.Callback):
    """Records loss, learning rate, tokens/s, TFLOP/s and MFU per optimizer step, and validation results.

    With several ranks, the recorded loss is the mean over all of them (the loss
    of the global batch) and tokens count every rank's windows.

    On an accelerator the losses stay on the device and are read every
    ``RECORD_EVERY_ON_ACCELERATOR`` steps (and before each validation and at the
    end): reading one is a host-device sync that would stall the queue of kernels
    every step. Throughput is then the mean over those steps, data loading included.
    ``shown`` holds the last read's figures as host floats for the progress bar
    (``RecordedProgressBar``), which so reads nothing off the device.
    """

    #: Steps between reads of the losses on an accelerator (one sync each); 1 on the CPU.
    RECORD_EVERY_ON_ACCELERATOR = 10

    def __init__(
        self,
        history: History,
        *,
        start_step: int,
        max_steps: int,
        windows_per_step: int,
        max_length: int,
        accumulate: int,
        log_metrics: Callable[[dict[str, float], int], None] | None,
        flops_per_token: int = 0,
        peak_tflops: float = 0.0,
        record_every: int | None = None,
    ) -> None:
        """``record_every``: steps between reads of the losses; by default 1 on the CPU and
        ``RECORD_EVERY_ON_ACCELERATOR`` on an accelerator."""
        self.history, self.start_step, self.max_steps = history, start_step, max_steps
        self.windows_per_step, self.max_length, self.accumulate = windows_per_step, max_length, accumulate
        self.log_metrics = log_metrics
        self.flops_per_token = flops_per_token
        self.peak_tflops = peak_tflops  # per device; 0 = look the accelerator up (see src.models.flops)
        self.record_every = record_every or 1
        self._record_every_chosen = record_every is not None
        self.shown: dict[str, float] = {}  # the last read's figures, for the progress bar
        self._micro_losses: list[torch.Tensor] = []
        self._pending: list[
            tuple[int, float, torch.Tensor]
        ] = []  # (step, lr, micro-batch losses on the device)
        self._interval_started: float | None = None
        self._lr = 0.0

    def step(self, trainer: L.Trainer) -> int:
        return self.start_step + trainer.global_step

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        device = trainer.strategy.root_device
        if device.type != "cpu" and not self._record_every_chosen:
            self.record_every = self.RECORD_EVERY_ON_ACCELERATOR
        if not self.peak_tflops and device.type == "cuda":
            self.peak_tflops = device_peak_tflops(torch.cuda.get_device_name(device)) or 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._interval_started is None:
            self._interval_started = time.perf_counter()
        if batch_idx % self.accumulate == 0:
            self._lr = trainer.optimizers[0].param_groups[0]["lr"]  # the rate this step uses

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._micro_losses.append(outputs["loss"].detach())
        if (batch_idx + 1) % self.accumulate:
            return
        micro_losses = torch.stack(self._micro_losses)  # (accumulate,), still on the device
        self._micro_losses = []
        step = self.step(trainer)
        self._pending.append((step, self._lr, micro_losses))
        if len(self._pending) >= self.record_every or step >= self.max_steps:
            self.record(trainer)
        kill_point(f"train.after-step-{step}")

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.record(trainer)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.record(trainer)

    def record(self, trainer: L.Trainer) -> float:
        """Reads the pending steps' losses (one sync) into the history and MLflow; returns tokens/s.

        Every rank calls it at the same steps: with several ranks the losses are reduced.
        """
        if not self._pending:
            return math.nan
        losses = torch.stack([loss for _, _, loss in self._pending])  # (steps, accumulate)
        if trainer.world_size > 1:
            losses = trainer.strategy.reduce(losses, reduce_op="mean")  # on the device, as NCCL needs
        # Means in float64 on the host: not every accelerator has float64 (MPS), and the CPU does.
        # Lightning hands on each micro-batch's loss divided by the accumulation count, so the
        # step's loss (the mean over its micro-batches) is their sum.
        values = losses.cpu().double().sum(dim=1).tolist()
        seconds = time.perf_counter() - (self._interval_started or time.perf_counter())
        tokens = self.windows_per_step * self.max_length * trainer.world_size * len(self._pending)
        rate = tokens / max(seconds, 1e-9)
        speed = self.speed(rate, trainer.world_size)
        for (step, lr, _), loss in zip(self._pending, values, strict=True):
            row = {"step": step, TRAIN_LOSS: loss, "lr": lr, "tokens_per_s": rate, **speed}
            self.history.train.append(row)
            if self.log_metrics and trainer.is_global_zero:
                self.log_metrics(tracked_train_metrics(row), step)
        self.history.tokens_seen += tokens
        self.history.train_seconds += seconds
        self.shown = {TRAIN_LOSS: values[-1], "tokens_per_s": rate}
        if speed:  # MFU where the peak is known, else the achieved model TFLOP/s
            name = "mfu" if "mfu" in speed else "tflops"
            self.shown[name] = speed[name]
        self._pending, self._interval_started = [], None
        return rate

    def speed(self, tokens_per_s: float, devices: int) -> dict[str, float]:
        """Achieved model TFLOP/s and, where the device's peak is known, MFU (src.models.flops)."""
        speed = {}
        if self.flops_per_token:
            speed["tflops"] = tokens_per_s * self.flops_per_token / 1e12
            if self.peak_tflops:
                speed["mfu"] = utilization(tokens_per_s, self.flops_per_token, self.peak_tflops, devices)
        return speed

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or VAL_LOSS not in trainer.callback_metrics:
            return
        val_loss = float(trainer.callback_metrics[VAL_LOSS])
        result = {VAL_LOSS: val_loss, VAL_PERPLEXITY: perplexity(val_loss)}
        for name, value in trainer.callback_metrics.items():  # bits per byte; per source with several
            if name == VAL_BPB or source_of(name) is not None:
                result[name] = float(value)
        step = self.step(trainer)
        if self.history.val.get(step) == result:
            return  # the final validation of weights already validated at this step: logged once
        self.history.val[step] = result
        if trainer.is_global_zero:
            last = self.history.train[-1] if self.history.train else {}
            per_source = "".join(
                f", {source} {value:.4f}"
                for name, value in result.items()
                if (source := source_of(name, VAL_LOSS)) is not None
            )
            log.info(
                "step %d/%d: train_loss %.4f, val_loss %.4f (perplexity %.1f%s), %.0f tokens/s",
                step,
                self.max_steps,
                last.get(TRAIN_LOSS, math.nan),
                val_loss,
                result[VAL_PERPLEXITY],
                per_source,
                last.get("tokens_per_s", math.nan),
            )
            if self.log_metrics:
                self.log_metrics(result, step)


class RecordedProgressBar(TQDMProgressBar):
    """Lightning's progress bar, showing the step recorder's last figures (``StepRecorder.shown``).

    They are host floats. A metric logged with ``prog_bar=True`` would be read off the device
    by Lightning after every batch, whether or not the bar is redrawn: a host-device sync each
    step, which on a GPU drains the queue of kernels and leaves the device idle while the host
    prepares the next step.
    """

    def __init__(self, recorder: StepRecorder, refresh_rate: int) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.recorder = recorder

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float]:
        return {**super().get_metrics(trainer, pl_module), **self.recorder.shown}


class StepEnd(L.Callback):
    """What happens once an optimizer step is done, in one place: :meth:`end_step`.

    One step, in order: Lightning runs ``CausalLM.training_step`` on each micro-batch and the
    optimizer step; :class:`StepRecorder` queues its loss; Lightning validates when ``eval_every``
    divides the step (``val_check_interval``); then :meth:`end_step` checkpoints when
    ``checkpoint_every`` divides it or a stop was asked for, and ends the run on a stop. A step that
    validates ends after its validation, so its checkpoint holds the result and a resumed run's
    history is the uninterrupted one's: the two intervals are independent.

    A stop request (:class:`~src.train.stopping.StopSignals`, one process only) so takes effect at
    the next step boundary, with a checkpoint of that step.
    """

    def __init__(
        self,
        save: Callable[[L.Trainer, int], Path | None],
        record: Callable[[L.Trainer], object],
        *,
        start_step: int,
        max_steps: int,
        eval_every: int,
        checkpoint_every: int,
        accumulate: int,
        stop: StopSignals | None = None,
    ) -> None:
        self.save, self.record, self.stop = save, record, stop
        self.start_step, self.max_steps = start_step, max_steps
        self.eval_every, self.checkpoint_every, self.accumulate = eval_every, checkpoint_every, accumulate
        self._ended = start_step  # the last step end_step saw: a step ends once

    def end_step(self, trainer: L.Trainer, step: int) -> None:
        """Step ``step`` is trained, and validated if it validates: checkpoint when due or stopping."""
        if step <= self._ended:
            return
        self._ended = step
        stopping = self.stop is not None and self.stop.requested is not None and step < self.max_steps
        path = None
        if step % self.checkpoint_every == 0 or stopping:
            self.record(trainer)  # the queued losses into the history the checkpoint holds
            path = self.save(trainer, step)
        if stopping:
            self._stop(path, step)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.stop is None:
            return
        self.stop.install()  # over the SIGTERM handler the Trainer has just put in place
        if self.stop.requested:  # before the first step: the checkpoint resumed from still holds
            raise TrainingStopped(
                f"training stopped by {self.stop.requested} before step {self.start_step + 1}; "
                "run the same command again to continue",
                self.stop.exit_code,
            )

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.stop is not None:
            self.stop.install()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = self.start_step + trainer.global_step
        if (batch_idx + 1) % self.accumulate == 0 and step % self.eval_every:  # else after validation
            self.end_step(trainer, step)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and trainer.global_step > 0:
            self.end_step(trainer, self.start_step + trainer.global_step)

    def _stop(self, path: Path | None, step: int) -> None:
        written = f"its checkpoint {display_path(path)} is written" if path else "its checkpoint is written"
        raise TrainingStopped(
            f"training stopped by {self.stop.requested} at step {step}; {written}: run the same command "
            "again to resume from it",
            self.stop.exit_code,
        )


class AlignValidation(L.Callback):
    """Keeps validation on the global steps ``eval_every`` divides after a resume from any step.

    Lightning counts ``val_check_interval`` in batches from its own start, so a run resumed at step
    13 would validate at 23, 33, ... A checkpoint written at a stop can be at any step: the
    Trainer's batch count starts where the global step puts it instead.
    """

    def __init__(self, start_step: int, eval_every: int, accumulate: int) -> None:
        self.offset = (start_step % eval_every) * accumulate

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        total = trainer.fit_loop.epoch_loop.batch_progress.total
        total.ready += self.offset
        total.started += self.offset
        total.processed += self.offset
        total.completed += self.offset


class RestoreTrainingState(L.Callback):
    """On resume, puts optimizer, scheduler and RNG states back once Lightning has built them."""

    def __init__(self, state: CheckpointState) -> None:
        self.state = state

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        trainer.optimizers[0].load_state_dict(self.state.optimizer)
        trainer.lr_scheduler_configs[0].scheduler.load_state_dict(self.state.scheduler)
        restore_rng_states(self.state.rng)
