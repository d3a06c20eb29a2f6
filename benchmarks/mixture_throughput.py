"""What mixing sources costs: one source against a two-source mixture, in one run. Prints one JSON line.

Two figures, each a ratio against the single source read by the same code:

* the data loader alone (windows/s through ``train_dataloader()``, best of 3, alternated): the
  cost of the mixture schedule, the per-source epochs and the lookup of a window's source; from
  it, the share of a training step's time that the mixture adds (``sampling_cost_share``);
* training (Lightning tokens/s on the default model), the figure users see. Runs alternate
  between the two (one, mixed, one, mixed ...) and the ratio is the median of each pair's, so a
  change in the machine's load falls on both; on a shared CPU it is known to a few percent.

The mixture is the default corpus twice, under two names, at 0.7 / 0.3: the same tokens, so only
the sampling differs.

    python benchmarks/mixture_throughput.py [--steps 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import lightning as L
import torch
from bench_support import add_params_argument  # beside this script
from default_data import default_data  # benchmarks/default_data.py, beside this script
from training_paths import fitted_to, project_rate  # beside this script

from src.config import load_params
from src.data.token_data import TokenDataModule
from src.models.causal_lm import CausalLM, build_model

LOADER_BATCHES = 3000
WARMUP_STEPS = 5


def loader_rate(data: TokenDataModule, batches: int) -> float:
    """Windows per second through the training data loader (no model)."""
    data.train_length = batches * data.batch_size
    started = time.perf_counter()
    count = sum(len(batch["input_ids"]) for batch in data.train_dataloader())
    data.train_length = None
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per run")
    parser.add_argument("--repeats", type=int, default=5, help="training runs of each kind, alternated")
    add_params_argument(parser)
    args = parser.parse_args()
    params = load_params(args.params)
    t = params.train
    token_dir, manifest, vocab, single = default_data(params)
    name = manifest.source.dataset
    weights = {name: 0.7, f"{name}_again": 0.3}
    mixed = TokenDataModule(
        {name: token_dir, f"{name}_again": token_dir},
        single.tokenizer,
        weights=weights,
        batch_size=t.batch_size,
        max_length=t.max_length,
        seed=t.seed,
    )
    mixed.setup("fit")
    data = {"one_source": single, "mixture": mixed}

    loader: dict[str, float] = {kind: 0.0 for kind in data}
    for _ in range(3):
        for kind, source in data.items():
            loader[kind] = max(loader[kind], loader_rate(source, LOADER_BATCHES))
    training: dict[str, list[float]] = {kind: [] for kind in data}
    L.seed_everything(0, verbose=False)
    train = fitted_to(t, WARMUP_STEPS + args.steps, accelerator="cpu", precision="32-true")
    module = CausalLM(build_model(params.model, vocab, t.max_length, token_dir), train)
    for _ in range(args.repeats):
        for kind, source in data.items():
            rate, _ = project_rate(module, train, source.train_dataloader(), WARMUP_STEPS)
            training[kind].append(rate)
    pairs = [m / o for m, o in zip(training["mixture"], training["one_source"], strict=True)]
    # Seconds the mixture adds per window, over the seconds a training step spends per window.
    windows_per_s = statistics.median(training["one_source"]) / t.max_length
    extra = 1 / loader["mixture"] - 1 / loader["one_source"]
    print(
        json.dumps(
            {
                "benchmark": "mixture_throughput",
                "threads": torch.get_num_threads(),
                "mixture": weights,
                "loader_windows_per_s": {kind: round(rate) for kind, rate in loader.items()},
                "loader_mixture_vs_one_source": round(loader["mixture"] / loader["one_source"], 3),
                "train_tokens_per_s": {kind: [round(r) for r in rates] for kind, rates in training.items()},
                "sampling_cost_share": float(f"{extra * windows_per_s:.2g}"),  # signed: noise can be < 0
                "train_mixture_vs_one_source": round(statistics.median(pairs), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
