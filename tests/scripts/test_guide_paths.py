"""The workflow guide's script paths run the scripts in ``scripts/``, from any folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from src.paths import PROJECT_ROOT


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("src/utils/download_datasets.py", "Fetch, cache and export the raw datasets"),
        ("src/train/train.py", "Train the causal language model"),
    ],
)
def test_the_guides_path_runs_the_script(path: str, says: str, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / path), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert says in result.stdout and "--params" in result.stdout
