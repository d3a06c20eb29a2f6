"""Quality per second: which architecture learns the default corpus best in the same wall-clock time.
Prints one JSON line.

Each candidate (a GPT-2-style model and a Llama-style one, the default since
this comparison, of about the same parameter count, both from ``model.*`` of
params.yaml) first times its steps (steps 11-30 of a short run, past the
Trainer's start), then trains for as many steps as fit in ``--budget`` seconds,
with the learning-rate schedule of ``train.*`` stretched to those steps, on the
project's training path (``trainer_settings``, the data module over the
tokenized default corpus). Reported per candidate: steps, tokens/s, the final
validation loss and bits per byte (``val_bpb``: the validation loss in bits
over the UTF-8 bytes of the validation text, which compares runs whatever their
tokenizer), and the ratio of the Llama-style model's ``val_bpb`` to the GPT-2-style
one's.

With several ``--seeds`` each seed (``train.seed``: the initial weights and the
window order) trains both candidates, the first candidate alternating from seed
to seed so that a drift in the machine's speed favours neither; the line then
holds each seed's ratio and their mean, which is what a change of the default
should rest on (one seed is one draw).

Needs the tokenized default corpus: run ``dvc repro tokenize`` first.

    python benchmarks/quality_per_second.py [--budget 120] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from typing import Any

import lightning as L
import torch
from bench_support import add_params_argument  # beside this script
from default_data import default_data  # benchmarks/default_data.py, beside this script
from training_paths import StepClock, fitted_to  # beside this script

from src.config import ModelConfig, Params, load_params
from src.models.causal_lm import CausalLM, Vocabulary, build_model
from src.paths import resolve_path
from src.train.trainer_settings import trainer_settings

#: Steps of the calibration run; the speed is timed over those after the first ``UNTIMED_STEPS``, so
#: the Trainer's start and the first, slower steps do not shorten the budget's run.
CALIBRATION_STEPS = 30
UNTIMED_STEPS = 10


def train_for(
    params: Params,
    model_config: ModelConfig,
    data: Any,
    vocab: Vocabulary,
    steps: int,
    validate: bool = True,
    callbacks: list[L.Callback] | None = None,
) -> tuple[float, float]:
    """Trains a fresh model for ``steps`` with the schedule of ``train.*`` fitted to them; the final
    validation loss and bits per byte, as the training reports them (NaN without ``validate``)."""
    t = params.train
    train = fitted_to(t, steps)
    L.seed_everything(t.seed, verbose=False)
    model = build_model(model_config, vocab, t.max_length, resolve_path(params.paths.model_cache))
    module = CausalLM(model, train, data.validation_sources)
    data.train_start, data.train_length, data.seed = 0, steps * t.batch_size, t.seed
    settings = trainer_settings(train, {"accelerator": t.accelerator, "devices": 1})
    if not validate:
        settings["limit_val_batches"] = 0
    trainer = L.Trainer(**settings, enable_progress_bar=False, callbacks=callbacks or [])
    trainer.fit(module, datamodule=data)  # validates after the last step (train.eval_every = steps)
    if not validate:
        return math.nan, math.nan
    return float(trainer.callback_metrics["val_loss"]), float(trainer.callback_metrics["val_bpb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per candidate")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="train.seed values to repeat over (default: train.seed)",
    )
    add_params_argument(parser)
    args = parser.parse_args()
    params = load_params(args.params)
    _, _, vocab, data = default_data(params)
    model_cache = resolve_path(params.paths.model_cache)
    t = params.train
    candidates = {
        "gpt2": dataclasses.replace(params.model, architecture="gpt2"),
        "llama": dataclasses.replace(params.model, architecture="llama"),
    }
    seeds = args.seeds if args.seeds is not None else [t.seed]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in candidates}
    for index, seed in enumerate(seeds):
        seeded = dataclasses.replace(params, train=dataclasses.replace(t, seed=seed))
        order = list(candidates) if index % 2 == 0 else list(reversed(candidates))
        for name in order:
            runs[name].append(
                {"seed": seed, **budget_run(seeded, candidates[name], data, vocab, args.budget)}
            )
    results: dict[str, Any] = {}
    for name, model_config in candidates.items():
        model = build_model(model_config, vocab, t.max_length, model_cache)
        size = sum(p.numel() for p in model.parameters())
        bpbs = [run["val_bpb"] for run in runs[name]]
        results[name] = {
            "parameters": size,
            "mean_val_bpb": round(sum(bpbs) / len(bpbs), 4),
            "runs": runs[name],
        }
    ratios = [
        round(llama["val_bpb"] / gpt2["val_bpb"], 4)
        for gpt2, llama in zip(runs["gpt2"], runs["llama"], strict=True)
    ]
    print(
        json.dumps(
            {
                "benchmark": "quality_per_second",
                "threads": torch.get_num_threads(),
                "budget_s": args.budget,
                "model": f"{params.model.n_layer}x{params.model.n_embd}, vocab {vocab.size}",
                **results,
                "llama_vs_gpt2_bpb_per_seed": ratios,
                "llama_vs_gpt2_bpb": round(
                    results["llama"]["mean_val_bpb"] / results["gpt2"]["mean_val_bpb"], 4
                ),
            }
        )
    )


def budget_run(
    params: Params, model_config: ModelConfig, data: Any, vocab: Vocabulary, budget: float
) -> dict:
    """One candidate at one seed: as many steps as the calibrated speed fits in ``budget`` seconds."""
    t = params.train
    clock = StepClock(UNTIMED_STEPS)
    train_for(params, model_config, data, vocab, CALIBRATION_STEPS, validate=False, callbacks=[clock])
    seconds_per_step = clock.seconds / (CALIBRATION_STEPS - UNTIMED_STEPS)
    steps = max(CALIBRATION_STEPS, int(budget / seconds_per_step))
    started = time.perf_counter()
    val_loss, val_bpb = train_for(params, model_config, data, vocab, steps)
    seconds = time.perf_counter() - started
    return {
        "steps": steps,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(steps * t.batch_size * t.max_length / seconds),
        "val_loss": round(val_loss, 4),
        "val_bpb": round(val_bpb, 4),
    }


if __name__ == "__main__":
    main()
