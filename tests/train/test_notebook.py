"""The workflow guide's sanity-check notebook runs top to bottom."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from src.paths import PROJECT_ROOT


@pytest.mark.slow
def test_notebook_runs_on_a_tiny_config(tiny_params_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the session's tiny data (already tokenized, so the notebook only reads it)."""
    monkeypatch.setenv("LMPIPE_PARAMS", str(tiny_params_file))
    notebook = nbformat.read(PROJECT_ROOT / "src" / "train" / "train.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(PROJECT_ROOT)}}
    ).execute()
    outputs = "".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "'input_ids': (8, 64)" in outputs
    assert "train_loss" in outputs and "[greedy]" in outputs
