"""Where time and memory go as the vocabulary grows, and what the chunked loss saves. Prints one JSON line.

The default model (``model.*`` defaults: Llama-style, 4 layers, width 128) at the default
context and batch, with vocabularies of 8,192 (the default BPE), 50,257 (GPT-2)
and 128,000 (Llama 3), each with the loss in one piece and in slices of
``--chunk`` tokens (``train.loss_chunk_tokens``). Per case: tokens/s of
forward + backward + AdamW, and peak memory (the GPU's allocator on a GPU; the
process's peak RSS on the CPU, each case in a process of its own). Ratios are
against the 8,192 vocabulary with the plain loss, in the same run.

    python benchmarks/vocab_scaling.py [--steps 10] [--chunk 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from src.config import ModelConfig, TrainConfig
from src.models.causal_lm import CausalLM, Vocabulary, build_model

VOCABULARIES = (8_192, 50_257, 128_000)
WARMUP = 3


def run_case(vocab: int, chunk: int, steps: int) -> dict[str, float]:
    """One configuration, in this process: tokens/s and peak memory in GiB."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    train = TrainConfig(loss_chunk_tokens=chunk, max_steps=WARMUP + steps, warmup_steps=0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as cache:
        model = build_model(ModelConfig(), Vocabulary(vocab, vocab - 1), train.max_length, Path(cache))
    module = CausalLM(model, train).to(device).train()
    optimizer = module.configure_optimizers()["optimizer"]
    ids = torch.randint(0, vocab, (train.batch_size, train.max_length), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(WARMUP + steps):
        if step == WARMUP:
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
        with autocast:
            loss = module(ids, ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {"tokens_per_s": steps * train.batch_size * train.max_length / seconds, "peak_gib": peak / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case (after 3 warmup steps)")
    parser.add_argument("--chunk", type=int, default=256, help="tokens per loss slice in the chunked cases")
    parser.add_argument("--case", nargs=2, type=int, metavar=("VOCAB", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case, args.steps)))
        return
    cases = {}
    for vocab in VOCABULARIES:
        for chunk in (0, args.chunk):
            # A process per case: the CPU's peak RSS is per process, and no case inherits another's cache.
            command = [sys.executable, __file__, "--steps", str(args.steps), "--case", str(vocab), str(chunk)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            cases[f"vocab_{vocab}_{'chunked' if chunk else 'plain'}"] = json.loads(output.splitlines()[-1])
    base = cases[f"vocab_{VOCABULARIES[0]}_plain"]
    for figures in cases.values():
        figures["speed_vs_base"] = round(figures["tokens_per_s"] / base["tokens_per_s"], 3)
        figures["memory_vs_base"] = round(figures["peak_gib"] / base["peak_gib"], 3)
        figures["tokens_per_s"], figures["peak_gib"] = (
            round(figures["tokens_per_s"]),
            round(figures["peak_gib"], 3),
        )
    cuda = torch.cuda.is_available()
    defaults = ModelConfig()
    print(
        json.dumps(
            {
                "benchmark": "vocab_scaling",
                "device": torch.cuda.get_device_name()
                if cuda
                else f"cpu ({torch.get_num_threads()} threads)",
                "model": f"{defaults.architecture} {defaults.n_layer}x{defaults.n_embd}",
                "batch_tokens": TrainConfig().batch_size * TrainConfig().max_length,
                "chunk_tokens": args.chunk,
                "memory": "GPU allocator peak" if cuda else "process peak RSS",
                "base": f"vocab_{VOCABULARIES[0]}_plain",
                **cases,
            }
        )
    )


if __name__ == "__main__":
    main()
