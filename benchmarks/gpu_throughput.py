"""GPU training throughput: the project's training path against a plain PyTorch loop. Prints one JSON line.

GPT-2 124M (12 layers, width 768, 12 heads, context 1024, vocabulary 50,257) in
bf16-mixed with SDPA attention, with and without ``torch.compile``. Both paths
train the same model (built by ``build_model``) on the same windows (the
project's sampler over random tokens) with the same optimizer, schedule, clipping
and batch; the plain loop is the floor of what any framework can do, so
``project_vs_plain`` is the cost of the project's machinery: Lightning, the
Trainer settings training runs with (``trainer_settings``), the step recorder and
the progress bar.

Reported per path: tokens/s, achieved model TFLOP/s and MFU against the device's
dense bf16 peak (see ``src/models/flops.py``), and peak GPU memory. Without a GPU
the script runs a scaled-down model on the CPU in fp32 (``--preset tiny``), so it
is testable anywhere; those figures say nothing about GPUs.

With ``--repeats N`` every path runs N times, the order of the paths reversed
each round, and the median round is reported (with every round's tokens/s): the
plain loop alone varied by 7% from one run to the next on an H100.

    python benchmarks/gpu_throughput.py [--preset gpt2-124m|tiny] [--steps 50] [--compile both|on|off]
                                        [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from src.config import ModelConfig, TrainConfig
from src.data.windows import TokenWindows, WindowSampler
from src.models.causal_lm import CausalLM, Vocabulary, build_model
from src.models.flops import device_peak_tflops, flops_per_token, utilization
from src.train.callbacks import StepRecorder
from src.train.history import History
from src.train.trainer_settings import progress_bar, trainer_settings

#: name -> (model, context, vocabulary, batch size, precision)
PRESETS: dict[str, tuple[ModelConfig, int, int, int, str]] = {
    "gpt2-124m": (ModelConfig(n_layer=12, n_head=12, n_embd=768), 1024, 50_257, 16, "bf16-mixed"),
    "tiny": (ModelConfig(n_layer=2, n_head=2, n_embd=64), 64, 1_000, 4, "32-true"),
}


class _Clock(L.Callback):
    """Times the optimizer steps after the warmup ones, waiting for the device at both ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.started, self.seconds = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup and not self.started:
            _synchronize()
            self.started = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        _synchronize()
        self.seconds = time.perf_counter() - self.started


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def windows(vocab: int, context: int, batch: int, steps: int, seed: int = 0) -> DataLoader:
    """The project's sampler and windows over random tokens: the same batches for both paths."""
    tokens = np.random.default_rng(seed).integers(0, vocab, size=(steps + 1) * batch * context + 1)
    tokens = tokens.astype(np.uint32 if vocab > 65_535 else np.uint16)
    sampler = WindowSampler(len(tokens), context, seed, start=0, length=steps * batch)
    return DataLoader(TokenWindows(tokens, context), batch_size=batch, sampler=sampler, drop_last=True)


def project_rate(
    module: CausalLM, train: TrainConfig, data: DataLoader, warmup: int, deterministic: bool = False
) -> tuple[float, float]:
    """Tokens/s of the training path ``train_on_rank`` runs (its Trainer settings and callbacks), and
    the loss of its last step.

    ``deterministic=True`` asks for deterministic kernels, as the project did on GPUs before it was
    measured here, to show what they cost (see ``trainer_settings``).
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
        windows_per_step=train.batch_size,
        max_length=train.max_length,
        accumulate=1,
        log_metrics=None,
        flops_per_token=flops_per_token(module.model, train.max_length),
    )
    clock = _Clock(warmup)
    trainer = L.Trainer(**settings, callbacks=[recorder, clock, *progress_bar(placement)])
    trainer.fit(module, train_dataloaders=data)
    torch.use_deterministic_algorithms(False)  # Lightning leaves it set for the whole process
    rate = (train.max_steps - warmup) * train.batch_size * train.max_length / clock.seconds
    return rate, history.train[-1]["train_loss"]


def plain_rate(
    module: CausalLM, train: TrainConfig, device: torch.device, data: DataLoader, warmup: int
) -> tuple[float, float]:
    """Tokens/s of a hand-written loop over the same module, optimizer and schedule, never syncing
    until the end; and the loss of its last step."""
    module.to(device).train()
    configured = module.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=train.precision == "bf16-mixed")
    for step, batch in enumerate(data):
        if step == warmup:
            _synchronize()
            started = time.perf_counter()
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        with autocast:
            loss = module(batch["input_ids"], batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), train.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    _synchronize()
    seconds = time.perf_counter() - started
    return (train.max_steps - warmup) * train.batch_size * train.max_length / seconds, loss.item()


def measure(
    preset: str,
    compiled: bool,
    steps: int,
    warmup: int,
    batch: int,
    deterministic_too: bool = True,
    repeats: int = 1,
) -> dict[str, Any]:
    """Each path ``repeats`` times, the order of the paths reversed on every other round so that a
    drift of the device's clocks favours none; a path's figures are its median round's."""
    model_config, context, vocab, _, precision = PRESETS[preset]
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    total = warmup + steps
    train = TrainConfig(
        max_length=context,
        batch_size=batch,
        max_steps=total,
        warmup_steps=min(10, total - 1),
        eval_every=total,
        checkpoint_every=total,
        precision=precision if cuda else "32-true",
        accelerator="gpu" if cuda else "cpu",
        compile=compiled,
    )
    vocabulary = Vocabulary(vocab, vocab - 1)
    results: dict[str, Any] = {}
    paths = ("plain_torch", "project") + (("project_deterministic",) if deterministic_too else ())
    rounds: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
    with tempfile.TemporaryDirectory() as cache:
        for round_index in range(repeats):
            for path in paths if round_index % 2 == 0 else tuple(reversed(paths)):
                L.seed_everything(0, verbose=False)
                torch._dynamo.reset()
                model = build_model(model_config, vocabulary, context, Path(cache))
                module = CausalLM(model, train)
                data = windows(vocab, context, batch, total)
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                if path == "plain_torch":
                    rate, last_loss = plain_rate(module, train, device, data, warmup)
                else:
                    rate, last_loss = project_rate(
                        module, train, data, warmup, deterministic=path == "project_deterministic"
                    )
                # The same model, data and optimizer: the paths end on the same loss (to float rounding).
                figures: dict[str, Any] = {
                    "tokens_per_s": round(rate),
                    "last_loss": float(f"{last_loss:.6g}"),
                }
                if cuda:
                    figures["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                results["attention"] = model.config._attn_implementation
                fpt = flops_per_token(model, context)
                figures["tflops"] = float(f"{rate * fpt / 1e12:.4g}")
                peak = device_peak_tflops(torch.cuda.get_device_name()) if cuda else None
                if peak:
                    figures["mfu"] = round(utilization(rate, fpt, peak), 4)
                rounds[path].append(figures)
                del module, model
    for path in paths:
        ranked = sorted(rounds[path], key=lambda figures: figures["tokens_per_s"])
        results[path] = ranked[(len(ranked) - 1) // 2]  # the median round (the lower one of an even count)
        if repeats > 1:
            results[path]["rounds_tokens_per_s"] = [figures["tokens_per_s"] for figures in rounds[path]]
    for path in paths[1:]:
        ratio = results[path]["tokens_per_s"] / results["plain_torch"]["tokens_per_s"]
        results[f"{path}_vs_plain"] = round(ratio, 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), help="default: gpt2-124m on a GPU, tiny on the CPU"
    )
    parser.add_argument("--steps", type=int, default=50, help="timed optimizer steps per path")
    parser.add_argument(
        "--warmup", type=int, default=10, help="untimed steps first (compilation happens here)"
    )
    parser.add_argument("--compile", choices=("both", "on", "off"), default="both")
    parser.add_argument("--batch-size", type=int, help="windows per step (default: the preset's)")
    parser.add_argument(
        "--no-deterministic", action="store_true", help="skip the run with deterministic kernels"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of every path, in alternating order; medians reported"
    )
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    preset = args.preset or ("gpt2-124m" if cuda else "tiny")
    model_config, context, vocab, batch, precision = PRESETS[preset]
    batch = args.batch_size or batch
    figures: dict[str, Any] = {
        "benchmark": "gpu_throughput",
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "preset": preset,
        "model": dataclasses.asdict(model_config) | {"context": context, "vocab": vocab},
        "batch_tokens": batch * context,
        "precision": precision if cuda else "32-true",
        "steps": args.steps,
        "repeats": args.repeats,
    }
    for compiled in {"both": (False, True), "on": (True,), "off": (False,)}[args.compile]:
        figures["compiled" if compiled else "eager"] = measure(
            preset, compiled, args.steps, args.warmup, batch, not args.no_deterministic, args.repeats
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
