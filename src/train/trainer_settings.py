"""The Lightning Trainer's settings for ``train.*``: what training runs with and what the
benchmarks in ``benchmarks/`` time, so a benchmark measures exactly the project's training path."""

from __future__ import annotations

from typing import Any

import lightning as L

from src.config import TrainConfig
from src.train.callbacks import RecordedProgressBar, StepRecorder


def trainer_settings(
    t: TrainConfig, placement_options: dict[str, Any], start_step: int = 0
) -> dict[str, Any]:
    """The Trainer's settings for ``train.*`` on a placement: what training runs with, and what
    ``benchmarks/`` measure, so a benchmark times exactly the project's training path."""
    return {
        **placement_options,
        "precision": t.precision,
        "max_steps": t.max_steps - start_step,
        "max_epochs": 1,  # the sampler streams every remaining step's windows as one epoch
        "accumulate_grad_batches": t.accumulate_grad_batches,
        # CausalLM.configure_gradient_clipping clips (a fused optimizer may not be clipped by Lightning);
        # DeepSpeed clips inside its own step, from this setting.
        "gradient_clip_val": (t.grad_clip or None) if _clips_in_its_step(placement_options) else None,
        "val_check_interval": t.eval_every * t.accumulate_grad_batches,
        "check_val_every_n_epoch": None,
        "num_sanity_val_steps": 0,
        # Bitwise reproducible on the CPU, at no cost. Not on a GPU: there deterministic kernels cost
        # 7% of the speed eager and about a third compiled (benchmarks/gpu_throughput.py on an H100),
        # and some (attention's backward) have no deterministic version, so runs differ in the last
        # bits either way.
        "deterministic": placement_options["accelerator"] == "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "use_distributed_sampler": False,
    }


def _clips_in_its_step(placement_options: dict[str, Any]) -> bool:
    strategy = placement_options.get("strategy")
    name = strategy if isinstance(strategy, str) else type(strategy).__name__
    return "deepspeed" in str(name).lower()


def progress_bar(placement_options: dict[str, Any], recorder: StepRecorder) -> list[L.Callback]:
    """Lightning's bar with the recorder's figures, redrawn every step on the CPU and every few on an
    accelerator, where the recorder reads them every few (each redraw is work for the host)."""
    if placement_options.get("enable_progress_bar", True) is False:
        return []
    every = 1 if placement_options["accelerator"] == "cpu" else StepRecorder.RECORD_EVERY_ON_ACCELERATOR
    return [RecordedProgressBar(recorder, refresh_rate=every)]
