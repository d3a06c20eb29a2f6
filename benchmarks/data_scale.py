"""The data stages at the scale users bring: disk, time and memory per text byte. Prints one JSON line.

Builds a deterministic corpus of ``--gb`` GB of plain text from the default corpus (KJV verses
drawn at random, one to two per document, one document per line: no download), puts it in a
scratch copy of this project's working tree as a ``download.local`` dataset, and runs its
stages through ``dvc repro`` as a user would: ``download_local@big``, the ``tokenizer`` (a BPE
trained on it) and ``tokenize@big``. Reported:

* per stage: wall seconds (DVC's own hashing and caching included), MB of text per second,
  tokens/s for tokenize, and the peak RSS of the largest process the stage ran;
* ``encoder_tokens_per_s``: the tokenize stage's encoder on the same documents in memory (up to
  ``--encoder-mb`` of them), every core, no I/O, and ``tokenize_vs_encoder``, the ratio;
* ``disk``: bytes on disk per byte of text, by folder (each file counted once, whatever links
  it: an output linked into DVC's cache costs nothing twice), and their total;
* a no-op ``dvc repro`` and ``dvc status`` with the outputs in place, and ``dvc push`` /
  ``dvc pull`` (outputs and cache removed first) to a local remote.

    python benchmarks/data_scale.py --gb 0.1 [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from bench_support import run_child, timed_child  # beside this script

from src.config import available_cores
from src.paths import PROJECT_ROOT
from src.utils.working_tree import commit_all, copy_working_tree

DATASET = "big"
#: Documents of one or two verses: about 200 bytes each, so 1 GB is some 5M documents.
VERSES_PER_DOCUMENT = (1, 2)
PART_BYTES = 64 << 20
SEED = 0


def build_corpus(folder: Path, total_bytes: int, seed: int = SEED) -> tuple[int, int]:
    """Text files of ``total_bytes`` (or a line more) under ``folder``, one document per line, the
    same bytes for the same size and seed. Returns (bytes, documents)."""
    from src.data.sources import _package_file

    kjv = _package_file("benchmark", "package://bible/data/kjv.jsonl")
    verses = [json.loads(line)["text"].replace("\n", " ") for line in kjv.read_text("utf-8").splitlines()]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = documents = part = 0
    while written < total_bytes:
        lines = []
        part_bytes = 0
        while part_bytes < PART_BYTES and written + part_bytes < total_bytes:
            picks = rng.integers(0, len(verses), size=(4096, max(VERSES_PER_DOCUMENT)))
            counts = rng.integers(VERSES_PER_DOCUMENT[0], VERSES_PER_DOCUMENT[1] + 1, size=4096)
            for row, count in zip(picks, counts, strict=True):
                line = " ".join(verses[i] for i in row[:count]) + "\n"
                lines.append(line)
                part_bytes += len(line.encode("utf-8"))
                if written + part_bytes >= total_bytes or part_bytes >= PART_BYTES:
                    break
        (folder / f"part-{part:05d}.txt").write_text("".join(lines), encoding="utf-8")
        written += part_bytes
        documents += len(lines)
        part += 1
    return written, documents


def big_params(project: Path) -> None:
    """The project's params with the scratch corpus as its only dataset."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["download"]["datasets"] = {}
    params["download"]["local"] = {DATASET: {"path": "text", "data_dir": "corpus", "data_files": "*.txt"}}
    params["tokenize"]["datasets"] = [DATASET]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def disk_use(project: Path, corpus_bytes: int) -> dict[str, float]:
    """Bytes on disk per text byte, by folder; a file linked from several places counts once, in
    the first folder listed (so DVC's cache adds only what is not linked to an output)."""
    cache = project / "data" / "main_cache"
    folders = {
        "export": cache / "raw" / DATASET,
        "tokens": cache / "tokenized",
        "datasets_cache": cache / "raw",
        "dvc_cache": project / ".dvc" / "cache",
        "other_data": project / "data",
    }
    seen: set[tuple[int, int]] = set()
    use = {}
    for name, folder in folders.items():
        total = 0
        for path in folder.rglob("*") if folder.exists() else ():
            info = path.lstat()
            if path.is_symlink() or not path.is_file() or (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
        use[name] = round(total / corpus_bytes, 3)
    use["total"] = round(sum(use.values()), 3)
    return use


def dvc(project: Path, *args: str) -> dict[str, float]:
    return timed_child([sys.executable, "-m", "dvc", *args], cwd=project, env=_tool_env())


def _tool_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def encoder_rate(project: Path, limit_mb: float) -> float:
    """Tokens/s of the stage's encoder on the export's first ``limit_mb`` MB of documents, in memory."""
    from concurrent.futures import ThreadPoolExecutor

    from transformers import AutoTokenizer

    from src.data.encoding import iter_document_chunks
    from src.data.fast_encoder import build_encoder, document_frame

    cache = project / "data" / "main_cache"
    tokenizer = AutoTokenizer.from_pretrained(str(cache / "tokenized" / "bpe" / "tokenizer"))
    encoder = build_encoder(tokenizer, document_frame(tokenizer, tokenizer.eos_token_id))
    chunks, size = [], 0
    for chunk in iter_document_chunks(cache / "raw" / DATASET / "train.jsonl"):
        chunks.append(chunk)
        size += sum(len(text) for text in chunk)
        if size >= limit_mb * 1e6:
            break
    started = time.perf_counter()
    with ThreadPoolExecutor(available_cores()) as pool:
        tokens = sum(ids.size for ids in pool.map(encoder.encode_documents, chunks))
    return tokens / (time.perf_counter() - started)


def stage_figures(run: dict[str, float], corpus_bytes: int) -> dict[str, float]:
    return {
        "seconds": round(run["seconds"], 2),
        "mb_per_s": round(corpus_bytes / 1e6 / run["seconds"], 2),
        "peak_rss_mb": round(run["peak_rss_mb"], 1),
    }


def measure(work: Path, gb: float, encoder_mb: float) -> dict:
    project = copy_working_tree(work / "project")
    commit_all(project, "scratch")
    corpus_bytes, documents = build_corpus(project / "corpus", int(gb * 1e9))
    big_params(project)
    commit_all(project, "the benchmark corpus")
    download = dvc(project, "repro", "--single-item", f"download_local@{DATASET}")
    tokenizer = dvc(project, "repro", "--single-item", "tokenizer")
    tokenize = dvc(project, "repro", "--single-item", f"tokenize@{DATASET}")
    token_manifest = project / "data/main_cache/tokenized/bpe" / DATASET / "manifest.json"
    tokens = sum(split["tokens"] for split in json.loads(token_manifest.read_text())["splits"].values())
    disk = disk_use(project, corpus_bytes)
    stages = (f"download_local@{DATASET}", "tokenizer", f"tokenize@{DATASET}")
    noop_repro = dvc(project, "repro", f"tokenize@{DATASET}")
    status = dvc(project, "status", *stages)
    encoder = encoder_rate(project, encoder_mb)
    run_child(
        [sys.executable, "-m", "dvc", "remote", "add", "-d", "bench", str(work / "remote")], cwd=project
    )
    push = dvc(project, "push", *stages)
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "data" / "main_cache")
    pull = dvc(project, "pull", *stages)
    clean = run_child(
        [sys.executable, "-m", "dvc", "status", "--json", *stages], cwd=project, env=_tool_env()
    )
    figures = {
        "benchmark": "data_scale",
        "gb": gb,
        "corpus_bytes": corpus_bytes,
        "documents": documents,
        "cores": available_cores(),
        "tokens": tokens,
        "download": stage_figures(download, corpus_bytes),
        "tokenizer": stage_figures(tokenizer, corpus_bytes),
        "tokenize": {
            **stage_figures(tokenize, corpus_bytes),
            "tokens_per_s": round(tokens / tokenize["seconds"]),
        },
        "encoder_tokens_per_s": round(encoder),
        "disk_per_text_byte": disk,
        "noop_repro_s": round(noop_repro["seconds"], 2),
        "status_s": round(status["seconds"], 2),
        "push_s": round(push["seconds"], 2),
        "pull_s": round(pull["seconds"], 2),
        "clean_after_pull": json.loads(clean.stdout or "{}") == {},
    }
    figures["tokenize_vs_encoder"] = round(figures["tokenize"]["tokens_per_s"] / encoder, 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=0.1, help="corpus size in GB (1e9 bytes)")
    parser.add_argument(
        "--encoder-mb", type=float, default=200, help="MB of documents the in-memory encoder is timed on"
    )
    parser.add_argument(
        "--keep", type=Path, help="build in this new folder and keep it (default: a scratch one)"
    )
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True)
        figures = measure(args.keep.resolve(), args.gb, args.encoder_mb)
    else:
        scratch = PROJECT_ROOT / "tmp"
        scratch.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="data-scale-", dir=scratch) as work:
            figures = measure(Path(work), args.gb, args.encoder_mb)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
