"""A run's tags tie it to its commit, its DVC experiment and the exact data it trained on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from src.train.provenance import EXP_NAME_TAG, dvc_experiment_name, git_commit, locked_out_md5, source_tags


def test_the_commit_is_the_checkouts_head_and_none_outside_a_repository(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert git_commit(tmp_path) is None  # no commit yet
    (tmp_path / "f").write_text("x")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
    assert git_commit(tmp_path) == head.strip()
    assert source_tags(tmp_path)["mlflow.source.git.commit"] == head.strip()


def test_the_dvc_experiment_comes_from_dvc_exp_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert dvc_experiment_name() is None
    monkeypatch.setenv("DVC_EXP_NAME", "sunny-lamb")
    assert dvc_experiment_name() == "sunny-lamb" and EXP_NAME_TAG == "dvc.exp_name"


def test_the_md5_of_an_output_is_the_one_dvc_lock_records(tmp_path: Path) -> None:
    lock = {
        "schema": "2.0",
        "stages": {"tokenize@kjv": {"outs": [{"path": "data/tok/kjv", "md5": "abc.dir", "size": 1}]}},
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert locked_out_md5(tmp_path / "data" / "tok" / "kjv", tmp_path) == "abc.dir"
    assert locked_out_md5(tmp_path / "data" / "tok" / "other", tmp_path) is None
    (tmp_path / "dvc.lock").write_text("stages: [unclosed")
    assert locked_out_md5(tmp_path / "data" / "tok" / "kjv", tmp_path) is None  # a broken lock: no tag
