"""Quality per second: which architecture learns the default corpus best in the same wall-clock time.
Prints one JSON line.

Each candidate (the GPT-2-style default and a Llama-style model of about the
same parameter count, both from ``model.*`` of params.yaml) first times a few
steps, then trains for as many steps as fit in ``--budget`` seconds, with the
learning-rate schedule of ``train.*`` stretched to those steps, on the project's
training path (``trainer_settings``, the data module over the tokenized default
corpus). Reported per candidate: steps, tokens/s, the final validation loss and
bits per byte (``val_bpb``: the validation loss in bits over the UTF-8 bytes of
the validation text, which compares runs whatever their tokenizer), and the ratio
of the Llama-style model's ``val_bpb`` to the default's.

Needs the tokenized default corpus: run ``dvc repro tokenize`` first.

    python benchmarks/quality_per_second.py [--budget 120]
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

from src.config import ModelConfig, Params, load_params
from src.data.token_files import read_token_manifest
from src.models.causal_lm import CausalLM, Vocabulary, build_model
from src.paths import resolve_path
from src.train.trainer_settings import trainer_settings
from src.utils.environment import configure_environment

CALIBRATION_STEPS = 10


def validation_bytes(params: Params) -> int:
    """UTF-8 bytes of the validation documents of the default dataset (the separators are not text)."""
    manifest = read_token_manifest(params.paths.tokenized_dir(params.tokenize.tokenizer))
    export = params.paths.raw_dir() / manifest.source.dataset
    text_column = params.download.datasets[manifest.source.dataset].text_column
    total = 0
    with (export / "validation.jsonl").open(encoding="utf-8") as rows:
        for row in rows:
            total += len(json.loads(row)[text_column].encode("utf-8"))
    return total


def train_for(
    params: Params, model_config: ModelConfig, data: Any, vocab: Vocabulary, steps: int, validate: bool = True
) -> float:
    """Trains a fresh model for ``steps`` with the schedule of ``train.*`` fitted to them; the final
    validation loss (NaN without ``validate``)."""
    t = params.train
    train = dataclasses.replace(
        t,
        max_steps=steps,
        warmup_steps=min(t.warmup_steps, max(0, steps // 10)),
        eval_every=steps,
        checkpoint_every=steps,
    )
    L.seed_everything(t.seed, verbose=False)
    module = CausalLM(
        build_model(model_config, vocab, t.max_length, resolve_path(params.paths.model_cache)), train
    )
    data.train_start, data.train_length = 0, steps * t.batch_size
    settings = trainer_settings(train, {"accelerator": t.accelerator, "devices": 1})
    if not validate:
        settings["limit_val_batches"] = 0
    trainer = L.Trainer(**settings, enable_progress_bar=False)
    trainer.fit(module, datamodule=data)  # validates after the last step (train.eval_every = steps)
    return float(trainer.callback_metrics["val_loss"]) if validate else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per candidate")
    args = parser.parse_args()
    params = load_params()
    configure_environment(model_cache=resolve_path(params.paths.model_cache))
    from transformers import AutoTokenizer

    from src.data.token_data import TokenDataModule

    token_dir = params.paths.tokenized_dir(params.tokenize.tokenizer)
    manifest = read_token_manifest(token_dir)
    vocab = Vocabulary(manifest.tokenizer.vocab_size, manifest.tokenizer.eos_id)
    tokenizer = AutoTokenizer.from_pretrained(str(token_dir / "tokenizer"))
    t = params.train
    data = TokenDataModule(
        token_dir, tokenizer, batch_size=t.batch_size, max_length=t.max_length, seed=t.seed
    )
    data.setup("fit")
    scored_tokens = len(data.val_tokens) - 1  # every validation token but the first is predicted once
    text_bytes = validation_bytes(params)
    candidates = {
        "gpt2": params.model,
        "llama": dataclasses.replace(params.model, architecture="llama"),
    }
    results: dict[str, Any] = {}
    for name, model_config in candidates.items():
        started = time.perf_counter()
        train_for(params, model_config, data, vocab, CALIBRATION_STEPS, validate=False)
        seconds_per_step = (time.perf_counter() - started) / CALIBRATION_STEPS
        steps = max(CALIBRATION_STEPS, int(args.budget / seconds_per_step))
        started = time.perf_counter()
        val_loss = train_for(params, model_config, data, vocab, steps)
        seconds = time.perf_counter() - started
        size = sum(p.numel() for p in build_model(model_config, vocab, t.max_length, token_dir).parameters())
        results[name] = {
            "parameters": size,
            "steps": steps,
            "seconds": round(seconds, 1),
            "tokens_per_s": round(steps * t.batch_size * t.max_length / seconds),
            "val_loss": round(val_loss, 4),
            "val_bpb": round(val_loss * scored_tokens / (math.log(2) * text_bytes), 4),
        }
    print(
        json.dumps(
            {
                "benchmark": "quality_per_second",
                "threads": torch.get_num_threads(),
                "budget_s": args.budget,
                "model": f"{params.model.n_layer}x{params.model.n_embd}, vocab {vocab.size}",
                **results,
                "llama_vs_gpt2_bpb": round(results["llama"]["val_bpb"] / results["gpt2"]["val_bpb"], 4),
            }
        )
    )


if __name__ == "__main__":
    main()
