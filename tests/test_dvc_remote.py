"""A second machine reproduces from a DVC remote: push, clone, pull, and nothing is left to run.

The first machine is a copy of the reproduced project (``dvc_project``); its run is committed and
pushed to a local folder remote. The second machine is a ``git clone`` of it: no DVC cache, no
outputs, no checkpoints, no MLflow store.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.slow

#: The cached outputs of the default pipeline, what the remote holds and ``dvc pull`` brings:
#: the export, the tokenizer and the tokens, then the model.
DATA = (
    "data/main_cache/raw/kjv",
    "data/main_cache/tokenized/bpe/tokenizer",
    "data/main_cache/tokenized/bpe/kjv",
)
PULLED = (*DATA, "data/model")
#: The uncached outputs: they travel through git.
IN_GIT = ("metrics.json", "plots/train_loss.csv", "plots/val_loss.csv", "plots/learning_rate.csv")
CHECKPOINTS = "data/checkpoints"
OTHER_LR = "0.001"  # params.yaml has 0.003


def git(project: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", message)


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative name."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def outputs(project: Path) -> dict[str, dict[str, str]]:
    return {name: digests(project / name) for name in PULLED}


def stages_run(result: subprocess.CompletedProcess) -> list[str]:
    """The stages a ``dvc repro`` / ``dvc exp run`` ran, from its "Running stage '<name>'" lines."""
    return sorted(
        line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")
    )


def stored_md5s(remote: Path) -> set[str]:
    """The md5 of every object a local DVC remote holds (``files/md5/ab/cdef...``)."""
    return {path.parent.name + path.name for path in (remote / "files" / "md5").rglob("*") if path.is_file()}


@pytest.fixture
def second_machine(dvc, dvc_project: Path, tmp_path: Path) -> SimpleNamespace:
    """The first machine commits its run and pushes it to a folder remote; the second clones the
    repository and, after checking that it starts with nothing, runs ``dvc pull``."""
    first, remote, clone = dvc_project, tmp_path / "remote", tmp_path / "second-machine"
    commit_all(first, "the run of dvc repro")
    dvc(first, "remote", "add", "-d", "storage", str(remote))
    commit_all(first, "a DVC remote")
    dvc(first, "push")
    assert json.loads(dvc(first, "status", "--cloud", "--json").stdout) == {}  # the remote has it all

    git(tmp_path, "clone", "-q", str(first), str(clone))
    for absent in (".dvc/cache", "data", "mlflow.db", "mlruns"):
        assert not (clone / absent).exists(), absent
    dvc(clone, "pull")
    return SimpleNamespace(first=first, remote=remote, clone=clone)


def test_a_clone_pulls_every_output_and_has_nothing_to_run(dvc, second_machine: SimpleNamespace) -> None:
    first, remote, clone = second_machine.first, second_machine.remote, second_machine.clone
    pulled = outputs(clone)
    assert all(pulled.values()) and pulled == outputs(first)
    for name in IN_GIT:
        assert (clone / name).read_bytes() == (first / name).read_bytes()

    # Checkpoints are not in the remote, and the clone needs none to be up to date.
    checkpoints = digests(first / CHECKPOINTS)
    assert checkpoints, "the first machine has no checkpoints: the check below would prove nothing"
    in_remote = stored_md5s(remote)
    for name in checkpoints:
        assert hashlib.md5((first / CHECKPOINTS / name).read_bytes()).hexdigest() not in in_remote, name
    assert not (clone / CHECKPOINTS).exists()

    assert json.loads(dvc(clone, "status", "--json").stdout) == {}
    repro = dvc(clone, "repro")
    assert stages_run(repro) == []
    assert "Data and pipelines are up to date." in repro.stdout
    assert outputs(clone) == pulled
    assert git(clone, "status", "--porcelain") == ""  # dvc.lock, metrics and plots as committed


def test_an_experiment_in_the_clone_trains_only(dvc, second_machine: SimpleNamespace, mlflow_runs) -> None:
    """``-S`` rewrites params.yaml, the one dep of ``check_params`` (it validates the file and writes
    nothing), so that stage runs too, and evaluate scores the new model; no download, tokenizer,
    tokenize or eval_data stage runs."""
    clone = second_machine.clone
    before = outputs(clone)
    run = dvc(clone, "exp", "run", "-S", f"train.lr={OTHER_LR}")
    assert stages_run(run) == ["check_params", "evaluate", "train"]
    after = outputs(clone)
    assert {name: after[name] for name in DATA} == {name: before[name] for name in DATA}
    assert after["data/model"] != before["data/model"]
    assert (clone / CHECKPOINTS).is_dir()  # written by this training, which started without any

    (shown,) = [
        rev
        for baseline in json.loads(dvc(clone, "exp", "show", "--json").stdout)
        for group in baseline.get("experiments") or []
        for rev in group["revs"]
    ]
    assert shown["data"]["params"]["params.yaml"]["data"]["train"]["lr"] == float(OTHER_LR)
    assert "val_loss" in shown["data"]["metrics"]["metrics.json"]["data"]

    (mlflow_run,) = mlflow_runs(f"sqlite:///{clone / 'mlflow.db'}")  # the clone's own store, created now
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.tags["dvc.exp_name"] == shown["name"]
    assert float(mlflow_run.data.params["train.lr"]) == float(OTHER_LR)
