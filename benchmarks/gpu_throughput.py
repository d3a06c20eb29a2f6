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

    python benchmarks/gpu_throughput.py [--preset gpt2-124m|gpt2-124m-peers|tiny] [--steps 50]
                                        [--compile both|on|off] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from training_paths import alternating_rounds, plain_rate, project_rate  # beside this script

from src.config import ModelConfig, TrainConfig
from src.data.windows import TokenWindows, WindowSampler
from src.models.causal_lm import CausalLM, Vocabulary, build_model
from src.models.flops import device_peak_tflops, flops_per_token, utilization
from src.models.optim import use_fused


@dataclasses.dataclass(frozen=True)
class Preset:
    """A model and the batch it trains on."""

    model: ModelConfig
    context: int
    vocab: int
    """The tokenizer's vocabulary; the model's rows are it padded to ``model.vocab_multiple``."""
    batch: int
    """Windows per micro-batch."""
    precision: str
    accumulate: int = 1
    """Micro-batches per optimizer step."""


#: GPT-2 named, not the project's default family: the figures compare with other GPT-2 124M runs
#: (nanoGPT, llm.c, nanochat's d12). ``gpt2-124m`` is #14's measurement (as published: 50,257 rows,
#: 16 x 1024 tokens per step); ``gpt2-124m-peers`` trains as those peers do: rows padded to 50,304,
#: 32 windows per micro-batch, 16 micro-batches (524,288 tokens) per optimizer step.
GPT2 = "gpt2"
GPT2_124M = ModelConfig(architecture=GPT2, n_layer=12, n_head=12, n_embd=768)
PRESETS: dict[str, Preset] = {
    "gpt2-124m": Preset(dataclasses.replace(GPT2_124M, vocab_multiple=1), 1024, 50_257, 16, "bf16-mixed"),
    "gpt2-124m-peers": Preset(GPT2_124M, 1024, 50_257, 32, "bf16-mixed", accumulate=16),
    "tiny": Preset(
        ModelConfig(architecture=GPT2, n_layer=2, n_head=2, n_embd=64), 64, 1_000, 4, "32-true", accumulate=2
    ),
}


def windows(vocab: int, context: int, batch: int, steps: int, seed: int = 0) -> DataLoader:
    """The project's sampler and windows over random tokens: the same batches for both paths."""
    tokens = np.random.default_rng(seed).integers(0, vocab, size=(steps + 1) * batch * context + 1)
    tokens = tokens.astype(np.uint32 if vocab > 65_535 else np.uint16)
    sampler = WindowSampler(len(tokens), context, seed, start=0, length=steps * batch)
    return DataLoader(TokenWindows(tokens, context), batch_size=batch, sampler=sampler, drop_last=True)


def measure(
    preset: str,
    compiled: bool,
    steps: int,
    warmup: int,
    batch: int,
    deterministic_too: bool = True,
    repeats: int = 1,
) -> dict[str, Any]:
    """Each path ``repeats`` times in alternating order (``alternating_rounds``): tokens/s, loss,
    model TFLOP/s, MFU and peak GPU memory of its median round, and its ratio to the plain loop."""
    chosen = PRESETS[preset]
    model_config, context, vocab, precision = chosen.model, chosen.context, chosen.vocab, chosen.precision
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    total = warmup + steps
    train = TrainConfig(
        max_length=context,
        batch_size=batch,
        accumulate_grad_batches=chosen.accumulate,
        max_steps=total,
        warmup_steps=min(10, total - 1),
        eval_every=total,
        checkpoint_every=total,
        precision=precision if cuda else "32-true",
        accelerator="gpu" if cuda else "cpu",
        compile=compiled,
    )
    vocabulary = Vocabulary(vocab, vocab - 1)
    attention: list[str] = []
    paths = ("plain_torch", "project") + (("project_deterministic",) if deterministic_too else ())

    def run(path: str) -> dict[str, Any]:
        L.seed_everything(0, verbose=False)
        torch._dynamo.reset()
        model = build_model(model_config, vocabulary, context, Path(cache))
        module = CausalLM(model, train)
        data = windows(vocab, context, batch, total * chosen.accumulate)
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
        figures: dict[str, Any] = {"tokens_per_s": round(rate), "last_loss": float(f"{last_loss:.6g}")}
        if cuda:
            figures["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        attention.append(model.config._attn_implementation)
        fpt = flops_per_token(model, context)
        figures["tflops"] = float(f"{rate * fpt / 1e12:.4g}")
        peak = device_peak_tflops(torch.cuda.get_device_name()) if cuda else None
        if peak:
            figures["mfu"] = round(utilization(rate, fpt, peak), 4)
        return figures

    with tempfile.TemporaryDirectory() as cache:
        results = alternating_rounds(paths, repeats, run)
    return {"attention": attention[-1], **results}


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
    parser.add_argument("--batch-size", type=int, help="windows per micro-batch (default: the preset's)")
    parser.add_argument(
        "--no-deterministic", action="store_true", help="skip the run with deterministic kernels"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of every path, in alternating order; medians reported"
    )
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    preset = args.preset or ("gpt2-124m" if cuda else "tiny")
    chosen = PRESETS[preset]
    batch = args.batch_size or chosen.batch
    figures: dict[str, Any] = {
        "benchmark": "gpu_throughput",
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "preset": preset,
        "model": dataclasses.asdict(chosen.model) | {"context": chosen.context, "vocab": chosen.vocab},
        "batch_tokens": batch * chosen.context,
        "step_tokens": batch * chosen.context * chosen.accumulate,
        "fused_optimizer": use_fused("auto", torch.device("cuda" if cuda else "cpu")),
        "precision": chosen.precision if cuda else "32-true",
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
