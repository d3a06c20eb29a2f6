"""The two training paths the throughput benchmarks compare, timed the same way.

``project_rate`` is the project's training path: the Trainer settings, step recorder and progress
bar that ``train_on_rank`` runs with (``trainer_settings``). ``plain_rate`` is a hand-written loop
over the same module, optimizer, schedule and clipping: the floor of what any framework can do, so
their ratio is the cost of the project's machinery. Both skip ``warmup`` steps (compilation, the
allocator's first growth) and wait for the device at both ends of the timed ones.
``alternating_rounds`` runs them in turn and reports each one's median round.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import torch

from src.config import TrainConfig
from src.models.causal_lm import CausalLM
from src.models.flops import flops_per_token
from src.train.callbacks import StepRecorder
from src.train.history import History
from src.train.trainer_settings import progress_bar, trainer_settings


def fitted_to(train: TrainConfig, steps: int, **changes: Any) -> TrainConfig:
    """``train.*`` for a run of ``steps``: its warmup cut to a tenth of them where it is longer (as
    the config requires it below the step count), one validation and checkpoint at the end."""
    return dataclasses.replace(
        train,
        max_steps=steps,
        warmup_steps=min(train.warmup_steps, steps // 10),
        eval_every=steps,
        checkpoint_every=steps,
        **changes,
    )


def synchronize() -> None:
    """Wait for the GPU's queued kernels, so a clock read measures work done, not work queued."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepClock(L.Callback):
    """Times the optimizer steps after the first ``warmup`` ones, to the end of training, waiting for
    the device at both ends: ``seconds`` once the Trainer is done."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.started, self.seconds = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup and not self.started:
            synchronize()
            self.started = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        synchronize()
        self.seconds = time.perf_counter() - self.started


def project_rate(
    module: CausalLM, train: TrainConfig, data: Iterable, warmup: int, deterministic: bool = False
) -> tuple[float, float]:
    """Tokens/s of the training path ``train_on_rank`` runs (its Trainer settings and callbacks) over
    ``train.max_steps`` steps of ``data``, the first ``warmup`` untimed; and its last step's loss.

    ``deterministic=True`` asks for deterministic kernels, as the project did on GPUs before it was
    measured, to show what they cost (see ``trainer_settings``).
    """
    placement = {"accelerator": train.accelerator, "devices": 1}
    settings = trainer_settings(train, placement)
    if deterministic:
        settings["deterministic"] = "warn"  # deterministic kernels where they exist, a warning elsewhere
    history = History()
    recorder = StepRecorder(
        history,
        start_step=0,
        max_steps=train.max_steps,
        windows_per_step=train.batch_size * train.accumulate_grad_batches,
        max_length=train.max_length,
        accumulate=train.accumulate_grad_batches,
        log_metrics=None,
        flops_per_token=flops_per_token(module.model, train.max_length),
    )
    clock = StepClock(warmup)
    trainer = L.Trainer(**settings, callbacks=[recorder, clock, *progress_bar(placement, recorder)])
    trainer.fit(module, train_dataloaders=data)
    torch.use_deterministic_algorithms(False)  # Lightning leaves it set for the whole process
    return step_tokens(train) * (train.max_steps - warmup) / clock.seconds, history.train[-1]["train_loss"]


def step_tokens(train: TrainConfig) -> int:
    """Tokens per optimizer step: ``train.accumulate_grad_batches`` micro-batches of windows."""
    return train.batch_size * train.accumulate_grad_batches * train.max_length


def plain_rate(
    module: CausalLM, train: TrainConfig, device: torch.device, data: Iterable, warmup: int
) -> tuple[float, float]:
    """Tokens/s of a hand-written loop over the same module, optimizer and schedule for
    ``train.max_steps`` steps of ``data`` (each ``train.accumulate_grad_batches`` micro-batches), never
    syncing until the end; and its last step's loss, the mean over its micro-batches."""
    module.to(device).train()
    configured = module.configure_optimizers()  # the very optimizer and schedule Lightning gets
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=train.precision == "bf16-mixed")
    batches = iter(data)
    for step in range(train.max_steps):
        if step == warmup:
            synchronize()
            started = time.perf_counter()
        loss = torch.zeros((), device=device)
        for _ in range(train.accumulate_grad_batches):
            batch = {key: value.to(device, non_blocking=True) for key, value in next(batches).items()}
            with autocast:
                micro = module(batch["input_ids"], batch["labels"]).loss / train.accumulate_grad_batches
            micro.backward()
            loss += micro.detach()
        if train.grad_clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), train.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize()
    seconds = time.perf_counter() - started
    return step_tokens(train) * (train.max_steps - warmup) / seconds, loss.item()


def alternating_rounds(
    paths: Sequence[str], repeats: int, run: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """``run(path)`` for every path ``repeats`` times, the order reversed every other round so that a
    drift of the machine's speed favours none.

    Per path, the figures of its median round by ``tokens_per_s`` (the lower one of an even count),
    with every round's tokens/s when there are several; and ``<path>_vs_plain``, each later path's
    tokens/s over the first's, the plain loop's.
    """
    rounds: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
    for round_index in range(repeats):
        for path in paths if round_index % 2 == 0 else tuple(reversed(paths)):
            rounds[path].append(run(path))
    results: dict[str, Any] = {}
    for path in paths:
        ranked = sorted(rounds[path], key=lambda figures: figures["tokens_per_s"])
        results[path] = ranked[(len(ranked) - 1) // 2]
        if repeats > 1:
            results[path]["rounds_tokens_per_s"] = [figures["tokens_per_s"] for figures in rounds[path]]
    for path in paths[1:]:
        ratio = results[path]["tokens_per_s"] / results[paths[0]]["tokens_per_s"]
        results[f"{path}_vs_plain"] = round(ratio, 3)
    return results
