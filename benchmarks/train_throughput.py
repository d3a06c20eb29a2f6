"""Training throughput of the project's Lightning path against a plain PyTorch loop. Prints one JSON line.

Both train the default model (``model.*`` of params.yaml) on the same windows of
the tokenized data with the same optimizer, schedule, clipping and batch; the
Lightning path is the one training runs (``benchmarks/training_paths.py``: its
Trainer settings, step recorder and progress bar) and the plain loop is the
floor of what any framework can do, so the ratio is the cost of the project's
training machinery. Both run on the CPU, whatever ``train.accelerator`` says;
``gpu_throughput.py`` measures GPUs.

    python benchmarks/train_throughput.py [--steps 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json

import lightning as L
import torch
from bench_support import add_params_argument  # beside this script
from default_data import default_data  # benchmarks/default_data.py, beside this script
from training_paths import alternating_rounds, fitted_to, plain_rate, project_rate  # beside this script

from src.config import load_params
from src.models.causal_lm import CausalLM, build_model

WARMUP_STEPS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per path (after 5 warmup steps)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of both paths, in alternating order; medians reported"
    )
    add_params_argument(parser)
    args = parser.parse_args()
    params = load_params(args.params)
    token_dir, _, vocab, data = default_data(params)
    total = WARMUP_STEPS + args.steps
    # Both paths on the CPU, whatever train.accelerator says (gpu_throughput.py measures GPUs).
    train = fitted_to(params.train, total, accelerator="cpu", precision="32-true")

    def run(path: str) -> dict[str, float]:
        L.seed_everything(0, verbose=False)
        module = CausalLM(build_model(params.model, vocab, train.max_length, token_dir), train)
        if path == "plain_torch":
            rate, loss = plain_rate(module, train, torch.device("cpu"), data.train_dataloader(), WARMUP_STEPS)
        else:
            rate, loss = project_rate(module, train, data.train_dataloader(), WARMUP_STEPS)
        # The same model, windows and optimizer: both paths end on the same loss (to float rounding).
        return {"tokens_per_s": round(rate), "last_loss": float(f"{loss:.6g}")}

    m = params.model
    figures = {
        "benchmark": "train_throughput",
        "threads": torch.get_num_threads(),
        "model": f"{m.architecture} {m.n_layer}x{m.n_embd}, vocab {vocab.size}",
        "batch_tokens": train.batch_size * train.max_length,
        "steps": args.steps,
        "repeats": args.repeats,
    }
    print(json.dumps(figures | alternating_rounds(("plain_torch", "lightning"), args.repeats, run)))


if __name__ == "__main__":
    main()
