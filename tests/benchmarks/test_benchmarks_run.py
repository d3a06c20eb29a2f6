"""Every benchmark runs, at a tiny size, and prints the figures and ratio it promises: none can rot.

(The figures themselves are not checked: a test checks behaviour, never speed.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from src.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow

BENCHMARKS = PROJECT_ROOT / "benchmarks"

#: script -> (its arguments at a tiny size, with ``{params}`` for the tiny params file; the keys its
#: JSON line must hold, dotted for nested ones).
TINY_RUNS: dict[str, tuple[list[str], list[str]]] = {
    "tokenize_throughput": (
        ["--params", "{params}", "--repeat", "2", "--runs", "1"],
        ["stage_vs_ceiling", "stage_vs_map_recipe", "peak_rss_growth", "ids_identical_to_hf_tokenizer"],
    ),
    "train_throughput": (
        ["--params", "{params}", "--steps", "2"],
        ["plain_torch.tokens_per_s", "lightning.tokens_per_s", "lightning_vs_plain"],
    ),
    "mixture_throughput": (
        ["--params", "{params}", "--steps", "2", "--repeats", "1"],
        ["loader_mixture_vs_one_source", "train_mixture_vs_one_source", "sampling_cost_share"],
    ),
    "quality_per_second": (
        ["--params", "{params}", "--budget", "1"],
        ["gpt2.mean_val_bpb", "llama.mean_val_bpb", "llama_vs_gpt2_bpb"],
    ),
    "vocab_scaling": (
        ["--steps", "1"],
        ["vocab_128000_chunked.speed_vs_base", "vocab_50257_plain.memory_vs_base"],
    ),
    "ray_throughput": (
        ["--params", "{params}", "--steps", "2", "--batch-size", "4"],
        ["ratios.ray_2_local_vs_single", "ratios.ray_2_nodes_vs_single"],
    ),
    "data_scale": (
        ["--gb", "0.003", "--encoder-mb", "1"],
        ["tokenize_vs_encoder", "disk_per_text_byte.total", "download.mb_per_s", "push_s", "pull_s"],
    ),
}
#: Scripts whose tiny run is tested in a module of their own.
TESTED_ELSEWHERE = {"gpu_throughput": "tests/benchmarks/test_gpu_throughput.py"}


def runnable_scripts() -> set[str]:
    """The benchmarks a user runs (the helpers beside them have no ``__main__`` block of their own)."""
    main_block = re.compile(r'^if __name__ == "__main__":$', re.MULTILINE)
    return {path.stem for path in BENCHMARKS.glob("*.py") if main_block.search(path.read_text())}


def test_every_benchmark_has_a_tiny_run() -> None:
    assert runnable_scripts() == set(TINY_RUNS) | set(TESTED_ELSEWHERE)


def dotted(figures: dict, key: str) -> object:
    value: object = figures
    for part in key.split("."):
        assert isinstance(value, dict) and part in value, f"{key} missing from {json.dumps(figures)[:2000]}"
        value = value[part]
    return value


@pytest.mark.parametrize("script", sorted(TINY_RUNS))
def test_benchmark_runs_at_a_tiny_size(script: str, python_runner, make_params, tmp_path: Path) -> None:
    args, keys = TINY_RUNS[script]
    params = make_params(tmp_path)
    done = python_runner(BENCHMARKS / f"{script}.py", *(a.format(params=params) for a in args), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["benchmark"] == script
    for key in keys:
        value = dotted(figures, key)
        assert value is not None and value != [], key
