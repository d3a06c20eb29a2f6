"""The data stages' memory stays flat as the corpus grows: a 20x larger corpus, the same peak RSS.

Each stage runs in a fresh process that reports its own peak RSS (and its helpers'). A stage that
held the corpus, its rows or its mapped pages in memory would grow by about the corpus' size
(20 MB on some 200 MB of libraries), past the 10% allowed. (Memory, never time: a test does not
measure speed.)
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow

SMALL_MB, LARGE_MB = 1, 20

DOWNLOAD = """
import json, resource, sys
from pathlib import Path
from src.config import DatasetSpec
from src.data.download import download_dataset
from src.utils.typed_config import build

corpus, cache = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(str(p) for p in corpus.glob("*.txt"))
spec = build(DatasetSpec, {"path": "text", "data_files": files}, "download.datasets.big")
download_dataset("big", spec, cache)
"""

TOKENIZE = """
import json, resource, sys
from pathlib import Path
from transformers import AutoTokenizer
from src.data.tokenize_corpus import tokenize_export

export, tokenizer, out = map(Path, sys.argv[1:4])
tokenize_export(export, out, AutoTokenizer.from_pretrained(str(tokenizer)), name="big", kind="bpe", threads=2)
"""

REPORT = """
usage = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"peak_rss_mb": usage / 1024}))
"""


def peak_rss_mb(code: str, *args: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", code + REPORT, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


@pytest.fixture(scope="module")
def build_corpus():
    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    try:
        return importlib.import_module("data_scale").build_corpus
    finally:
        sys.path.remove(str(PROJECT_ROOT / "benchmarks"))


def test_download_and_tokenize_peak_memory_is_flat_in_the_corpus_size(
    build_corpus, tiny_data, tmp_path: Path
) -> None:
    peaks: dict[str, dict[int, float]] = {"download": {}, "tokenize": {}}
    for mb in (SMALL_MB, LARGE_MB):
        corpus, cache = tmp_path / f"corpus{mb}", tmp_path / f"cache{mb}"
        build_corpus(corpus, mb * 1_000_000)
        peaks["download"][mb] = peak_rss_mb(DOWNLOAD, corpus, cache)
        export = cache / "raw" / "big"
        peaks["tokenize"][mb] = peak_rss_mb(TOKENIZE, export, tiny_data.tokenizer, tmp_path / f"tokens{mb}")
    for stage, by_size in peaks.items():
        growth = by_size[LARGE_MB] / by_size[SMALL_MB] - 1
        assert growth <= 0.10, f"{stage}: peak RSS {by_size} MB, {growth:.0%} more for {LARGE_MB}x the text"
