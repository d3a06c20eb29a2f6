"""What several benchmarks share: child processes whose failures are shown, and inputs made by the
pipeline's own code (so a benchmark measures what the stages would accept, and cannot drift from it)."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from src.config import PARAMS_FILE
from src.data.manifests import ExportManifest, ExportSource
from src.data.raw_export import SplitPlan, write_export


def add_params_argument(parser: argparse.ArgumentParser) -> None:
    """``--params FILE``: the params a benchmark reads (the project's ``params.yaml`` unless given)."""
    parser.add_argument(
        "--params", type=Path, default=PARAMS_FILE, help="params file (default: the project's params.yaml)"
    )


def run_child(command: Sequence[str | Path], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run ``command``, capturing its output; a failure exits with the command and the tail of its
    stderr (a bare ``CalledProcessError`` would hide why it failed)."""
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-20:])
        sys.exit(f"benchmark child failed (exit {result.returncode}): {' '.join(map(str, command))}\n{tail}")
    return result


def last_json_line(result: subprocess.CompletedProcess) -> dict:
    """The JSON object a child printed last (benchmarks print one line of figures)."""
    return json.loads(result.stdout.strip().splitlines()[-1])


def timed_child(command: Sequence[str | Path], **kwargs: Any) -> dict[str, float]:
    """Run ``command`` in a fresh measuring process: its wall seconds and the peak RSS (MB) of the
    largest process it started (the command or any process below it)."""
    measure = [sys.executable, __file__, "--measure", *map(str, command)]
    return last_json_line(run_child(measure, **kwargs))


class _Documents:
    """A split as ``write_export`` reads a ``datasets.Dataset``: batches of a text column."""

    def __init__(self, documents: Iterable[str]) -> None:
        self.documents = documents

    def iter(self, batch_size: int) -> Iterator[dict[str, list[str]]]:
        batch: list[str] = []
        for document in self.documents:
            batch.append(document)
            if len(batch) == batch_size:
                yield {"text": batch}
                batch = []
        if batch:
            yield {"text": batch}


def export_documents(splits: dict[str, Iterable[str]], target: Path, name: str = "bench") -> ExportManifest:
    """An export folder of ``splits`` (name -> documents) written by the download stage's own code,
    manifest and file hashes included, so the tokenize stage accepts it as it accepts a download."""
    manifest = ExportManifest(
        dataset=name,
        source=ExportSource(
            path="benchmark",
            name=None,
            data_dir=None,
            data_files=None,
            files={},
            options={},
            revision=None,
            text_column="text",
            sha256={},
            rows={},
        ),
        validation_split="from source",
        splits={},
    )
    plans = [SplitPlan(split) for split in splits]
    return write_export({s: _Documents(d) for s, d in splits.items()}, "text", plans, target, manifest)


def _measure(command: list[str]) -> None:
    started = time.perf_counter()
    code = subprocess.run(command).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        sys.exit(code)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))


if __name__ == "__main__" and sys.argv[1:2] == ["--measure"]:
    _measure(sys.argv[2:])
