"""Training throughput of the project's Lightning path against a plain PyTorch loop. Prints one JSON line.

Both train the default model (``model.*`` of params.yaml) on the same windows of
the tokenized data with the same optimizer and batch; the plain loop is the
floor of what any framework can do, so the ratio is the cost of the project's
training machinery (Lightning, callbacks, the data module).

    python benchmarks/train_throughput.py [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import time

import lightning as L
import torch
from default_data import default_data  # benchmarks/default_data.py, beside this script

from src.config import load_params
from src.models.causal_lm import CausalLM, build_model

WARMUP_STEPS = 5


class _Clock(L.Callback):
    """Times the steps after the warmup ones."""

    def __init__(self) -> None:
        self.started = 0.0
        self.steps = 0

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == WARMUP_STEPS:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        self.steps = trainer.global_step - WARMUP_STEPS


def lightning_rate(params, module: CausalLM, data, steps: int) -> float:
    clock = _Clock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=WARMUP_STEPS + steps,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        gradient_clip_val=params.train.grad_clip or None,
        deterministic=True,
        use_distributed_sampler=False,
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    return (
        clock.steps
        * params.train.batch_size
        * params.train.max_length
        / (time.perf_counter() - clock.started)
    )


def plain_rate(params, module: CausalLM, data, steps: int) -> float:
    t = params.train
    configured = module.configure_optimizers()  # the very optimizer and schedule Lightning gets
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    module.train()
    batches = iter(data.train_dataloader())
    for step in range(WARMUP_STEPS + steps):
        if step == WARMUP_STEPS:
            started = time.perf_counter()
        batch = next(batches)
        loss = module(batch["input_ids"], batch["labels"]).loss
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), t.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * t.batch_size * t.max_length / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per path (after 5 warmup steps)")
    args = parser.parse_args()
    params = load_params()
    token_dir, _, vocab, data = default_data(params)
    rates = {}
    for name, measure in (("plain_torch", plain_rate), ("lightning", lightning_rate)):
        L.seed_everything(0, verbose=False)
        model = build_model(params.model, vocab, params.train.max_length, token_dir)
        rates[name] = measure(params, CausalLM(model, params.train), data, args.steps)
    print(
        json.dumps(
            {
                "benchmark": "train_throughput",
                "threads": torch.get_num_threads(),
                "model": f"{params.model.n_layer}x{params.model.n_embd}, vocab {vocab.size}",
                "batch_tokens": params.train.batch_size * params.train.max_length,
                "steps": args.steps,
                "plain_torch_tokens_per_s": round(rates["plain_torch"]),
                "lightning_tokens_per_s": round(rates["lightning"]),
                "lightning_vs_plain": round(rates["lightning"] / rates["plain_torch"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
