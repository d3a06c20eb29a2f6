"""Tokenize-stage throughput and memory, against a ceiling and the common recipe. Prints one JSON line.

Measured on the default corpus (the download export of the first of ``tokenize.datasets``)
repeated to make it bigger, with the BPE vocabulary of ``params.yaml``:

* ``stage``: the stage's own code (read the export, encode, write the token file),
* ``ceiling``: the encoder the stage uses, on the same documents already in
  memory, with every core and no I/O,
* ``map_recipe``: ``datasets.map(batched=True)`` + group-texts, as in the
  ``transformers`` language-modeling examples, with ``num_proc`` = every core,

plus the stage's peak RSS at two corpus sizes 10x apart (each in a fresh
process) and whether its ids equal the Hugging Face tokenizer's, per document.

    python benchmarks/tokenize_throughput.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path

import numpy as np
from bench_support import (  # beside this script
    add_params_argument,
    export_documents,
    last_json_line,
    run_child,
)

from src.config import available_cores, load_params
from src.data.encoding import CHUNK_BYTES, iter_document_chunks, iter_documents
from src.data.fast_encoder import build_encoder, document_frame
from src.data.raw_export import read_manifest
from src.data.token_files import read_token_manifest
from src.data.tokenize_corpus import tokenize_export
from src.data.tokenizer_setup import train_bpe
from src.paths import PROJECT_ROOT

BLOCK_SIZE = 128


def repeated_export(source: Path, target: Path, times: int) -> Path:
    """An export folder holding ``source``'s splits repeated ``times`` times, written by the download
    stage's own code (file hashes in its manifest, as the tokenize stage checks them)."""
    manifest = read_manifest(source)

    def repeated(file: str):
        for _ in range(times):
            yield from iter_documents(source / file)

    export_documents({split: repeated(info.file) for split, info in manifest.splits.items()}, target)
    return target


def stage_child(export: str, tokenizer_dir: str, out: str, threads: int) -> None:
    """Run the stage's code in this (fresh) process and report its speed and peak RSS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    started = time.perf_counter()
    manifest = tokenize_export(
        Path(export), Path(out), tokenizer, name="bench", kind="bench", threads=threads
    )
    seconds = time.perf_counter() - started
    tokens = sum(info.tokens for info in manifest.splits.values())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens": tokens, "seconds": seconds, "peak_rss_mb": peak_mb}))


def run_stage(export: Path, tokenizer_dir: Path, out: Path, threads: int, runs: int) -> dict:
    """Best time and highest peak RSS of ``runs`` fresh processes running the stage's code."""
    command = [sys.executable, __file__, "--child", str(export), str(tokenizer_dir), str(out), str(threads)]
    results = [last_json_line(run_child(command)) for _ in range(runs)]
    best = min(results, key=lambda r: r["seconds"])
    return {**best, "peak_rss_mb": max(r["peak_rss_mb"] for r in results)}


def ceiling(export: Path, tokenizer, eos_token: str, threads: int, runs: int) -> tuple[int, float]:
    """Best of ``runs``: the stage's encoder on in-memory chunks of the same documents, all cores, no I/O."""
    chunks = [
        chunk
        for split in ("train", "validation")
        for chunk in iter_document_chunks(export / f"{split}.jsonl")
    ]
    encoder = build_encoder(tokenizer, document_frame(tokenizer, tokenizer.convert_tokens_to_ids(eos_token)))
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            tokens = sum(ids.size for ids in pool.map(encoder.encode_documents, chunks))
        best = min(best, time.perf_counter() - started)
    return tokens, best


def map_recipe(export: Path, tokenizer, threads: int, cache: Path) -> tuple[int, float]:
    """``datasets.map`` tokenization + group_texts, the transformers examples' recipe."""
    from datasets import load_dataset

    files = {split: str(export / f"{split}.jsonl") for split in ("train", "validation")}
    raw = load_dataset("json", data_files=files, cache_dir=str(cache))
    started = time.perf_counter()
    tokenized = raw.map(
        lambda batch: tokenizer(batch["text"]),
        batched=True,
        num_proc=threads,
        remove_columns=["text"],
        load_from_cache_file=False,
    )

    def group_texts(examples: dict) -> dict:
        joined = {k: list(chain(*examples[k])) for k in examples}  # as in run_clm.py
        total = len(joined["input_ids"]) // BLOCK_SIZE * BLOCK_SIZE
        result = {k: [v[i : i + BLOCK_SIZE] for i in range(0, total, BLOCK_SIZE)] for k, v in joined.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    tokens = sum(len(ids) for split in tokenized.values() for ids in split["input_ids"])
    tokenized.map(group_texts, batched=True, num_proc=threads, load_from_cache_file=False)
    return tokens, time.perf_counter() - started


def ids_identical(export: Path, out: Path, tokenizer) -> bool:
    """The stage's token file equals the HF tokenizer applied document by document, EOS after each."""
    eos = tokenizer.eos_token_id
    dtype = read_token_manifest(out).token_dtype()
    for split in ("train", "validation"):
        expected = np.fromiter(
            (
                i
                for ids in tokenizer(list(iter_documents(export / f"{split}.jsonl")))["input_ids"]
                for i in [*ids, eos]
            ),
            dtype=np.int64,
        )
        if not np.array_equal(np.fromfile(out / f"{split}.bin", dtype=dtype).astype(np.int64), expected):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=10, help="size of the large corpus, in copies of the default"
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each timing; the best counts")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    add_params_argument(parser)
    args = parser.parse_args()
    if args.child:
        stage_child(*args.child[:3], int(args.child[3]))
        return

    params = load_params(args.params)
    source = params.paths.raw_dir() / params.tokenize.datasets[0]
    if not (source / "manifest.json").is_file():
        sys.exit(f"{source}: no export; run `dvc repro download` first")
    threads = available_cores()
    scratch_root = PROJECT_ROOT / "tmp"  # the project's scratch folder: the data folder may be shared
    scratch_root.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tokbench-", dir=scratch_root) as scratch:
        work = Path(scratch)
        small = repeated_export(source, work / "x1", 1)
        large = repeated_export(source, work / f"x{args.repeat}", args.repeat)
        tokenizer = train_bpe(iter_documents(small / "train.jsonl"), params.tokenize)
        tokenizer.save_pretrained(str(work / "tokenizer"))
        eos_token = params.tokenize.eos_token

        stage_small = run_stage(small, work / "tokenizer", work / "out1", threads, args.runs)
        stage_large = run_stage(large, work / "tokenizer", work / "outN", threads, args.runs)
        ceiling_tokens, ceiling_s = ceiling(large, tokenizer, eos_token, threads, args.runs)
        map_tokens, map_s = map_recipe(large, tokenizer, threads, work / "hf_cache")
        identical = ids_identical(small, work / "out1", tokenizer)

    stage_rate = stage_large["tokens"] / stage_large["seconds"]
    ceiling_rate = ceiling_tokens / ceiling_s
    map_rate = map_tokens / map_s
    growth = stage_large["peak_rss_mb"] / stage_small["peak_rss_mb"] - 1
    result = {
        "benchmark": "tokenize_throughput",
        "threads": threads,
        "vocab_size": params.tokenize.vocab_size,
        "corpus_mb": round(sum(p.stat().st_size for p in source.glob("*.jsonl")) * args.repeat / 1e6, 1),
        "tokens": stage_large["tokens"],
        "stage_tokens_per_s": round(stage_rate),
        "ceiling_tokens_per_s": round(ceiling_rate),
        "map_recipe_tokens_per_s": round(map_rate),
        "stage_vs_ceiling": round(stage_rate / ceiling_rate, 3),
        "stage_vs_map_recipe": round(stage_rate / map_rate, 2),
        "peak_rss_mb_x1": round(stage_small["peak_rss_mb"], 1),
        f"peak_rss_mb_x{args.repeat}": round(stage_large["peak_rss_mb"], 1),
        "peak_rss_growth": round(growth, 3),
        "ids_identical_to_hf_tokenizer": identical,
        "chunk_bytes": CHUNK_BYTES,
        "runs": args.runs,
    }
    result["targets_met"] = bool(
        result["stage_vs_ceiling"] >= 0.8
        and result["stage_vs_map_recipe"] >= 3
        and growth <= 0.2
        and identical
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
