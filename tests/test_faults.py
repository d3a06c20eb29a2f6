"""Fault injection: a ``dvc repro`` killed at any point, then run again, ends where an uninterrupted one does.

Each case copies a small project at the state where the stage under test starts, runs
``dvc repro`` with ``LMPIPE_KILL_AT`` naming one kill point (:mod:`src.utils.faults`: the stage
sends itself SIGKILL there), checks that it died there, runs ``dvc repro`` again and compares
the project with one uninterrupted run made once for the module:

* every output byte for byte (export, tokens, model folder, plots), ``metrics.json`` (all but
  the measured tokens/s) with the same final losses, the same checkpoints kept, and the same
  hashes in ``dvc.lock``;
* MLflow: exactly one FINISHED run of the training, with the uninterrupted run's metric history
  (every key, each step once, the same values), and no run left RUNNING;
* no staging leftovers (``.<name>.*.tmp``, ``.<name>.*.old``) anywhere in the project.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from src.evaluate.results import METRIC_PREFIX

pytestmark = pytest.mark.slow

#: A corpus, vocabulary and training small enough that a whole ``dvc repro`` takes seconds. The
#: last checkpoint (step 20) comes before the last step (25), so a kill while the outputs are
#: written makes the next run train steps 21-25 again: the case where MLflow could get them twice.
SETTINGS = {
    "download.datasets.kjv.validation_fraction": 0.02,
    "tokenize.vocab_size": 600,
    "train.max_steps": 25,
    "train.eval_every": 5,
    "train.checkpoint_every": 10,
    "train.keep_checkpoints": 2,
}

#: Metrics that measure time; every other metric is a pure function of the settings on CPU.
TIMED = {"tokens_per_s", "step_tokens_per_s", "tflops", "mfu", "step_mfu"}  # speeds, not results

#: What a run leaves at the project root for MLflow; a copied store would log into its source.
STORE = ("mlflow.db", "mlflow.db.lock", "mlruns")

_LEFTOVER = re.compile(r"\..+\.(tmp|old)")


@dataclass(frozen=True)
class Case:
    point: str
    """``LMPIPE_KILL_AT``: the kill point, ``name`` or ``name:N`` (its N-th hit)."""
    start: str
    """The project state the killed run starts from: the stages before the one killed have run."""
    command: tuple[str, ...] = ("repro",)
    evaluated: bool = True
    """Whether the finishing ``dvc repro`` evaluates the new run. A forced re-train makes the same
    weights, so evaluate stays up to date (its results already are for those bytes) and the new
    run carries the training's figures only."""


CASES = [
    # download: a third of the rows exported, the export complete but not yet in its place.
    Case("export.row:1000", "empty"),
    Case("files.dir-staged.kjv", "empty"),
    # tokenizer and tokenize: the tokenizer trained, its folder staged, the first chunk of ids written,
    # every token file staged (the token folder is named after the dataset, as the export is: from
    # "downloaded", the first "kjv" folder staged is the tokens').
    Case("tokenize.tokenizer-trained", "downloaded"),
    Case("tokenize.chunk-written", "downloaded"),
    Case("files.dir-staged.tokenizer", "downloaded"),
    Case("files.dir-staged.kjv", "downloaded"),
    # train: the MLflow run created, before the first checkpoint, the first checkpoint written
    # under its temporary name, written but MLflow not yet told, between checkpoints, trained but
    # nothing written, the model folder in place but not metrics.json.
    Case("mlflow.run-created", "tokenized"),
    Case("train.after-step-5", "tokenized"),
    Case("files.file-staged.step-000000010.ckpt", "tokenized"),
    Case("train.checkpoint-persisted", "tokenized"),
    Case("train.after-step-15", "tokenized"),
    Case("train.trained", "tokenized"),
    Case("files.dir-swapped.model", "tokenized"),
    # the end-of-training MLflow logging: the summaries logged; everything logged, the model too,
    # and the run about to be ended.
    Case("mlflow.summary-logged", "tokenized"),
    Case("mlflow.run-ending", "tokenized"),
    # a forced re-run of train: the last model set aside, the new one not yet in its place.
    Case(
        "files.dir-retired.model",
        "trained",
        ("repro", "--force", "--single-item", "train"),
        evaluated=False,
    ),
]


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative name."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def locked_outs(project: Path) -> dict[str, str]:
    """The md5 ``dvc.lock`` records per output, less ``metrics.json`` (it holds measured times;
    compared on its own)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {
        f"{stage}: {out['path']}": out["md5"]
        for stage, entry in lock["stages"].items()
        for out in entry.get("outs", [])  # check_params writes nothing
        if out["path"] != "metrics.json"
    }


def outputs(project: Path) -> dict[str, object]:
    """Everything a run leaves that must not depend on whether it was interrupted (but MLflow)."""
    metrics = json.loads((project / "metrics.json").read_text())
    for measured in TIMED & set(metrics):
        metrics.pop(measured)
    checkpoints = project / "data" / "checkpoints"
    return {
        "export": digests(project / "data" / "main_cache" / "raw" / "kjv"),
        "tokenizer": digests(project / "data" / "main_cache" / "tokenized" / "bpe" / "tokenizer"),
        "tokens": digests(project / "data" / "main_cache" / "tokenized" / "bpe" / "kjv"),
        "model": digests(project / "data" / "model"),
        "plots": digests(project / "plots"),
        "metrics": metrics,
        "checkpoints": sorted(p.relative_to(checkpoints).as_posix() for p in checkpoints.rglob("*")),
        "dvc.lock": locked_outs(project),
    }


def leftovers(project: Path) -> list[str]:
    """Staging and retired copies (``.<name>.*.tmp``, ``.<name>.*.old``) anywhere outside git and DVC."""
    return sorted(
        path.relative_to(project).as_posix()
        for path in project.rglob(".*")
        if _LEFTOVER.fullmatch(path.name) and path.relative_to(project).parts[0] not in (".git", ".dvc")
    )


def store_uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


def history(uri: str, run) -> dict[str, list[tuple[int, float]]]:
    """Every metric of ``run``: its (step, value) pairs in step order, duplicates included."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in sorted(run.data.metrics)
    }


def models(uri: str, run) -> list[str]:
    """The status of each model logged by ``run`` (deleted ones are not listed)."""
    from mlflow import MlflowClient

    found = MlflowClient(uri).search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    return [str(model.status) for model in found]


@pytest.fixture(scope="module")
def starts(project_copy, dvc, tiny_data: SimpleNamespace, tmp_path_factory) -> dict[str, Path]:
    """The states a case starts from, each made by ``dvc repro`` (read-only: cases work on copies),
    and ``reference``: one uninterrupted ``dvc repro`` with its MLflow store."""
    base = tmp_path_factory.mktemp("fault_starts")
    settings = {**SETTINGS, "download.datasets.kjv.data_files": str(tiny_data.corpus)}
    found = {"empty": project_copy(base / "empty", settings)}
    for previous, name, target in (
        ("empty", "downloaded", "download@kjv"),
        ("downloaded", "tokenized", "tokenize"),
        ("tokenized", "reference", None),  # train and evaluate: everything a full `dvc repro` runs
    ):
        found[name] = Path(shutil.copytree(found[previous], base / name, symlinks=True))
        dvc(found[name], "repro", *([target] if target else []))
    found["trained"] = Path(
        shutil.copytree(
            found["reference"], base / "trained", symlinks=True, ignore=shutil.ignore_patterns(*STORE)
        )
    )
    return found


@pytest.fixture(scope="module")
def reference(starts: dict[str, Path], mlflow_runs) -> SimpleNamespace:
    project = starts["reference"]
    (run,) = mlflow_runs(store_uri(project))
    assert run.info.status == "FINISHED"
    uri = store_uri(project)
    return SimpleNamespace(outputs=outputs(project), history=history(uri, run), models=models(uri, run))


@pytest.mark.parametrize("case", CASES, ids=[f"{case.point}-from-{case.start}" for case in CASES])
def test_a_killed_repro_is_finished_by_the_next_exactly_as_an_uninterrupted_one(
    case: Case, starts: dict[str, Path], reference: SimpleNamespace, dvc, mlflow_runs, tmp_path: Path
) -> None:
    project = Path(shutil.copytree(starts[case.start], tmp_path / "project", symlinks=True))
    killed = dvc(project, *case.command, check=False, env={"LMPIPE_KILL_AT": case.point})
    said = killed.stdout + killed.stderr
    assert killed.returncode != 0 and f"kill point {case.point}: SIGKILL" in said, said[-3000:]

    dvc(project, "repro")

    found = outputs(project)
    assert found["metrics"] == pytest.approx(reference.outputs["metrics"], rel=1e-6, abs=1e-6)
    assert {**found, "metrics": None} == {**reference.outputs, "metrics": None}
    assert leftovers(project) == []

    runs = mlflow_runs(store_uri(project))
    assert [run.info.status for run in runs if run.info.status != "KILLED"] == ["FINISHED"]
    (run,) = [run for run in runs if run.info.status == "FINISHED"]
    assert_history_of_reference(project, run, reference, evaluated=case.evaluated)
    assert models(store_uri(project), run) == reference.models  # one model, complete


def assert_history_of_reference(
    project: Path, run, reference: SimpleNamespace, *, evaluated: bool = True
) -> None:
    """The run logged every key of the uninterrupted run (its evaluation's only if ``evaluated``),
    each step once, with its values (1e-6)."""
    logged = history(store_uri(project), run)
    expected = {
        key: rows
        for key, rows in reference.history.items()
        if evaluated or not key.startswith(f"{METRIC_PREFIX}.")
    }
    assert {key: [step for step, _ in rows] for key, rows in logged.items()} == {
        key: [step for step, _ in rows] for key, rows in expected.items()
    }
    for key in set(logged) - TIMED:
        values = [value for _, value in logged[key]]
        assert values == pytest.approx([v for _, v in reference.history[key]], rel=1e-6, abs=1e-6), key


# --------------------------------------------------------------------------- stopped by a signal


def stage_processes(project: Path, stage: str) -> list[int]:
    """The live processes of ``stages.<stage>`` started in ``project``."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        command = " ".join(process.info["cmdline"] or [])
        if f"stages.{stage}" in command and process.info["cwd"] == str(project):
            found.append(process.pid)
    return found


def without_training(project: Path, timeout: float = 120, stage: str = "train") -> list[int]:
    """Wait until no process of the stage in ``project`` is left (at most ``timeout``); those left."""
    deadline = time.monotonic() + timeout
    while (left := stage_processes(project, stage)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@dataclass(frozen=True)
class SignalCase:
    signal: signal.Signals
    target: str
    """``group``: the process group of ``dvc repro`` (a terminal's Ctrl-C, a scheduler); ``dvc``: the
    DVC process alone (``kill <pid>``)."""
    point: str
    """``LMPIPE_PAUSE_AT``: the signal lands while the training pauses here."""
    shell: str
    """``$SHELL``, which DVC runs the stage's cmd with: bash replaces itself with the command, dash
    (``/bin/sh`` on Debian) stays between DVC and the stage."""


SIGNAL_CASES = [
    SignalCase(number, target, point, shell)
    for number in (signal.SIGTERM, signal.SIGINT)
    for target in ("group", "dvc")
    # before the first checkpoint (step 10), and after it
    for point, shell in (("train.after-step-7", "/bin/sh"), ("train.after-step-13", "/bin/bash"))
]


@pytest.mark.parametrize(
    "case", SIGNAL_CASES, ids=[f"{c.signal.name}-to-{c.target}-at-{c.point}" for c in SIGNAL_CASES]
)
def test_a_repro_stopped_by_a_signal_leaves_no_training_and_the_next_one_ends_as_an_uninterrupted_one(
    case: SignalCase,
    starts: dict[str, Path],
    reference: SimpleNamespace,
    dvc,
    tool_env,
    mlflow_runs,
    tmp_path: Path,
) -> None:
    project = Path(shutil.copytree(starts["tokenized"], tmp_path / "project", symlinks=True))
    log = tmp_path / "repro.log"
    repro, release = started_repro(project, tool_env, log, "repro", pause=case.point, shell=case.shell)
    if case.target == "group":
        os.killpg(repro.pid, case.signal)
    else:
        os.kill(repro.pid, case.signal)
    ignored = case.signal == signal.SIGINT and case.target == "dvc"  # DVC ignores it while a stage runs
    if not ignored:  # the training goes on once it has taken the signal (or seen its dvc end)
        wait_for_text(repro, log, "stopping after the next step's checkpoint", ended_ok=True)
    release.touch()
    repro.wait(timeout=300)
    assert without_training(project) == [], "a training outlived its dvc repro"
    said = log.read_text()
    assert "Traceback" not in said, said[-3000:]
    if not ignored:
        assert repro.returncode != 0, said[-3000:]
        assert f"training stopped by {case.signal.name} at step " in said or (
            "training stopped by the process that started it exited" in said
        ), said[-3000:]

    dvc(project, "repro")

    found = outputs(project)
    assert found["metrics"] == pytest.approx(reference.outputs["metrics"], rel=1e-6, abs=1e-6)
    # The checkpoints kept are the newest ones, which a stop's own checkpoint can be one of.
    assert {**found, "metrics": None, "checkpoints": None} == {
        **reference.outputs,
        "metrics": None,
        "checkpoints": None,
    }
    newest = [name for name in found["checkpoints"] if name.endswith(".ckpt")][-1]
    assert newest == [name for name in reference.outputs["checkpoints"] if name.endswith(".ckpt")][-1]
    assert leftovers(project) == []
    runs = mlflow_runs(store_uri(project))
    assert [run.info.status for run in runs] == ["FINISHED"]  # the stopped run, resumed and ended
    assert_history_of_reference(project, runs[0], reference)


# --------------------------------------------------------------------------- two at once


def started_repro(
    project: Path, tool_env, log: Path, *args: str, pause: str, shell: str = "/bin/sh"
) -> tuple[subprocess.Popen, Path]:
    """``dvc <args>`` in the background (its stages run by ``shell``), once its stage pauses at
    ``pause``, and the file whose creation lets it go on (however slow the machine, the test acts
    while it is there)."""
    release = log.with_suffix(".release")
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "dvc", *args],
            cwd=project,
            env=tool_env({"LMPIPE_PAUSE_AT": pause, "LMPIPE_PAUSE_UNTIL": str(release), "SHELL": shell}),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a job of a shell or a scheduler
        )
    wait_for_text(process, log, f"pause point {pause}")
    return process, release


def wait_for_text(process: subprocess.Popen, log: Path, text: str, ended_ok: bool = False) -> None:
    """Until ``text`` is in ``log``; the process may end first only where ``ended_ok`` (a stage whose
    dvc ended still writes to the log)."""
    deadline = time.monotonic() + (120 if ended_ok else 600)
    while text not in log.read_text() and (ended_ok or process.poll() is None):
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    assert text in log.read_text(), log.read_text()[-3000:]


@pytest.mark.parametrize(
    ("target", "pause", "key", "edits"),
    [
        ("download@kjv", "files.dir-staged.kjv", "download.datasets.kjv.validation_fraction", (0.05, 0.03)),
        ("tokenizer", "tokenize.tokenizer-trained", "tokenize.min_frequency", (3, 4)),
    ],
)
def test_a_data_stage_whose_params_change_while_it_runs_is_not_recorded(
    starts: dict[str, Path], dvc, tool_env, tmp_path: Path, target: str, pause: str, key: str, edits: tuple
) -> None:
    """A colleague's ``dvc exp run -S`` rewrites ``params.yaml`` while a data stage runs (before it
    finds DVC's lock taken). DVC would record the new value for an output made from the old one, with
    ``dvc status`` clean; the stage ends with one line instead, and DVC records nothing."""
    project = Path(shutil.copytree(starts["downloaded"], tmp_path / "project", symlinks=True))
    params, lock = project / "params.yaml", (project / "dvc.lock").read_text()

    def set_value(value: object) -> None:
        data = yaml.safe_load(params.read_text())
        *parents, name = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[name] = value
        params.write_text(yaml.safe_dump(data, sort_keys=False))

    first, second = edits
    set_value(first)
    log = tmp_path / "repro.log"
    repro, release = started_repro(project, tool_env, log, "repro", "--single-item", target, pause=pause)
    set_value(second)  # the colleague's -S
    release.touch()
    assert repro.wait(timeout=300) != 0
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: the {target} stage's inputs changed while it ran ({key}: {first} -> {second}): its "
        "outputs would be recorded under inputs they were not made from, so this run is not recorded "
        "(the last recorded outputs stay in DVC's cache); run it again once nothing else changes them "
        "(two experiments at once: dvc exp run --queue)"
    ], log.read_text()[-3000:]
    assert (project / "dvc.lock").read_text() == lock
    status = dvc(project, "status", target).stdout
    assert "changed deps" in status and "params.yaml" in status, status  # not "up to date"


def test_a_stage_other_than_train_ends_with_the_dvc_that_started_it(
    starts: dict[str, Path], reference: SimpleNamespace, dvc, tool_env, tmp_path: Path
) -> None:
    """``kill -TERM <dvc pid>`` while tokenize runs: the stage must not go on with parent 1 beside
    the next ``dvc repro`` (their staging copies of one output would collide)."""
    project = Path(shutil.copytree(starts["downloaded"], tmp_path / "project", symlinks=True))
    log = tmp_path / "repro.log"
    repro, release = started_repro(project, tool_env, log, "repro", pause="tokenize.chunk-written")
    os.kill(repro.pid, signal.SIGTERM)
    repro.wait(timeout=120)
    left = without_training(project, timeout=60, stage="tokenize")  # ended while it still pauses
    release.touch()  # an orphan would go on now, to write its output
    assert left == [], "tokenize outlived its dvc"
    # It ended then and there: an orphan would have gone on to write its output, unrecorded.
    assert not (project / "data" / "main_cache" / "tokenized" / "bpe" / "kjv").exists()
    dvc(project, "repro")
    found = outputs(project)
    assert {**found, "metrics": None} == {**reference.outputs, "metrics": None}
    assert leftovers(project) == []


def test_two_repros_of_one_configuration_at_once_train_it_once(
    starts: dict[str, Path], reference: SimpleNamespace, dvc, tool_env, mlflow_runs, tmp_path: Path
) -> None:
    project = Path(shutil.copytree(starts["tokenized"], tmp_path / "project", symlinks=True))
    first, release = started_repro(
        project, tool_env, tmp_path / "first.log", "repro", pause="train.after-step-12"
    )
    second = dvc(project, "repro", check=False)
    release.touch()
    assert second.returncode != 0 and "lock" in second.stdout + second.stderr, second.stdout + second.stderr
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert outputs(project) == {**reference.outputs, "metrics": outputs(project)["metrics"]}
    (run,) = mlflow_runs(store_uri(project))
    assert run.info.status == "FINISHED"
    assert_history_of_reference(project, run, reference)  # each step once


def test_two_experiments_at_once_in_one_workspace_record_no_params_that_did_not_train(
    starts: dict[str, Path], dvc, tool_env, mlflow_runs, tmp_path: Path
) -> None:
    """The experiment that loses DVC's lock has already written its value into params.yaml; the one
    training must not end with DVC recording that value for its outputs."""
    project = Path(shutil.copytree(starts["tokenized"], tmp_path / "project", symlinks=True))

    def train_record() -> dict:
        return yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]

    before = train_record()
    log = tmp_path / "first.log"
    pause = "train.after-step-12"
    first, release = started_repro(project, tool_env, log, "exp", "run", "-S", "train.lr=0.001", pause=pause)
    second = dvc(project, "exp", "run", "-S", "train.lr=0.002", check=False)
    release.touch()
    assert second.returncode != 0, second.stdout + second.stderr
    first.wait(timeout=600)
    said = log.read_text()
    assert "Traceback" not in said, said[-3000:]
    finished = [run for run in mlflow_runs(store_uri(project)) if run.info.status == "FINISHED"]
    if "train.lr: 0.001 -> 0.002" in said:  # params.yaml was rewritten under the running training
        assert first.returncode != 0 and finished == []
        assert train_record() == before  # DVC recorded nothing for train
        assert "train" in dvc(project, "status").stdout  # and says the stage is not up to date
        shown = json.loads(dvc(project, "exp", "show", "--json").stdout or "[]")
        assert [row.get("experiments") for row in shown if row.get("experiments")] == []
    else:  # DVC left params.yaml alone: then what it recorded is what trained
        assert first.returncode == 0, said[-3000:]
        (run,) = finished
        recorded = train_record()["params"]["params.yaml"]["train"]["lr"]
        assert float(recorded) == float(run.data.params["train.lr"]) == 0.001


# --------------------------------------------------------------------------- a checkpoint that rotted


def test_a_checkpoint_that_rotted_is_skipped_for_the_newest_that_verifies(
    starts: dict[str, Path], reference: SimpleNamespace, dvc, mlflow_runs, tmp_path: Path
) -> None:
    """64 bytes flipped in the middle of the newest checkpoint (its size unchanged), as on flaky
    shared storage: it unpickled, and was resumed into a model other than the uninterrupted one's."""
    project = Path(shutil.copytree(starts["tokenized"], tmp_path / "project", symlinks=True))
    killed = dvc(project, "repro", check=False, env={"LMPIPE_KILL_AT": "train.trained"})
    assert killed.returncode != 0
    (newest,) = [p for p in (project / "data" / "checkpoints").glob("run-*/step-000000020.ckpt")]
    data = bytearray(newest.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    newest.write_bytes(bytes(data))

    resumed = dvc(project, "repro")
    said = resumed.stdout + resumed.stderr
    assert "step-000000020.ckpt is not resumed: its bytes do not match step-000000020.ckpt.sha256" in said
    assert "(step 10)" in said
    found = outputs(project)
    assert found["metrics"] == pytest.approx(reference.outputs["metrics"], rel=1e-6, abs=1e-6)
    assert {**found, "metrics": None} == {**reference.outputs, "metrics": None}  # step 20 written anew
    runs = mlflow_runs(store_uri(project))
    assert [run.info.status for run in runs] == ["FINISHED"]
