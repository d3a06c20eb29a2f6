"""Lightning callbacks that turn training into history, MLflow metrics and checkpoints.

Steps are counted globally: a resumed run starts a new Trainer whose own step
counter begins at 0, so every callback adds ``start_step``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import lightning as L

from src.models.metrics import perplexity
from src.train.checkpoints import CheckpointState, restore_rng_states
from src.train.history import History, tracked_train_metrics
from src.utils.faults import kill_point

log = logging.getLogger(__name__)


class StepRecorder(L.Callback):
    """Records loss, learning rate and tokens/s per optimizer step and validation results per eval.

    With several ranks, the recorded loss is the mean over all of them (the loss
    of the global batch) and tokens count every rank's windows.
    """

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
    ) -> None:
        self.history, self.start_step, self.max_steps = history, start_step, max_steps
        self.windows_per_step, self.max_length, self.accumulate = windows_per_step, max_length, accumulate
        self.log_metrics = log_metrics
        self._losses: list[float] = []
        self._started = 0.0
        self._lr = 0.0

    def step(self, trainer: L.Trainer) -> int:
        return self.start_step + trainer.global_step

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx % self.accumulate == 0:
            self._started = time.perf_counter()
            self._lr = trainer.optimizers[0].param_groups[0]["lr"]  # the rate this step uses

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"].detach()
        if trainer.world_size > 1:
            loss = trainer.strategy.reduce(loss, reduce_op="mean")
        self._losses.append(float(loss))
        if (batch_idx + 1) % self.accumulate:
            return
        seconds = time.perf_counter() - self._started
        tokens = self.windows_per_step * self.max_length * trainer.world_size
        row = {
            "step": self.step(trainer),
            "train_loss": sum(self._losses) / len(self._losses),
            "lr": self._lr,
            "tokens_per_s": tokens / max(seconds, 1e-9),
        }
        self._losses = []
        self.history.train.append(row)
        self.history.tokens_seen += tokens
        self.history.train_seconds += seconds
        module.log("tokens_per_s", row["tokens_per_s"], prog_bar=True, on_step=True, on_epoch=False)
        if self.log_metrics and trainer.is_global_zero:
            self.log_metrics(tracked_train_metrics(row), row["step"])
        kill_point(f"train.after-step-{row['step']}")

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
            return
        val_loss = float(trainer.callback_metrics["val_loss"])
        result = {"val_loss": val_loss, "val_perplexity": perplexity(val_loss)}
        step = self.step(trainer)
        if self.history.val.get(step) == result:
            return  # the final validation of weights already validated at this step: logged once
        self.history.val[step] = result
        if trainer.is_global_zero:
            last = self.history.train[-1] if self.history.train else {}
            log.info(
                "step %d/%d: train_loss %.4f, val_loss %.4f (perplexity %.1f), %.0f tokens/s",
                step,
                self.max_steps,
                last.get("train_loss", math.nan),
                val_loss,
                result["val_perplexity"],
                last.get("tokens_per_s", math.nan),
            )
            if self.log_metrics:
                self.log_metrics(result, step)


class PeriodicCheckpoint(L.Callback):
    """Saves a checkpoint every ``every`` optimizer steps, right after that step's validation.

    ``every`` is a multiple of the validation interval, so the checkpoint holds
    the step's validation result too and a resumed run's history is complete.
    """

    def __init__(self, every: int, start_step: int, save: Callable[[L.Trainer, int], None]) -> None:
        self.every, self.start_step, self.save = every, start_step, save

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        step = self.start_step + trainer.global_step
        fitting = trainer.state.fn == "fit" and not trainer.sanity_checking
        if fitting and trainer.global_step > 0 and step % self.every == 0:
            self.save(trainer, step)


class RestoreTrainingState(L.Callback):
    """On resume, puts optimizer, scheduler and RNG states back once Lightning has built them."""

    def __init__(self, state: CheckpointState) -> None:
        self.state = state

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        trainer.optimizers[0].load_state_dict(self.state.optimizer)
        trainer.lr_scheduler_configs[0].scheduler.load_state_dict(self.state.scheduler)
        restore_rng_states(self.state.rng)
