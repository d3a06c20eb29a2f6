"""A disk that fills while training writes a checkpoint or the model: one line, nothing lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("where", ["checkpoint_dir", "model_dir"])
def test_a_full_disk_is_one_line_naming_what_was_written(
    where, small_disk, make_params, train_command, tmp_path: Path
) -> None:
    params = make_params(tmp_path / "run", max_steps=20, eval_every=10, checkpoint_every=10)
    data = yaml.safe_load(params.read_text())
    disk = small_disk("disk", 48)  # smaller than one checkpoint or one model of the tiny settings
    data["paths"][where] = str(disk / where)
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    result = subprocess.run(train_command(params), capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    written = "step-000000010.ckpt: " if where == "checkpoint_dir" else ": "  # the model folder itself
    assert errors[0].startswith(f"error: {disk / where}") and f"{written}the disk is full (" in errors[0]
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert [p.name for p in disk.rglob("*") if p.name.endswith((".tmp", ".old"))] == []  # no staging left
