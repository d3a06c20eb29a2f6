"""A training stops when told and resumes exactly; one training of a configuration at a time; a run
whose params changed while it trained writes nothing DVC would record falsely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from src.errors import PipelineError
from src.train.stopping import PARENT_EXITED, StopSignals
from src.utils.locks import exclusive_lock, is_held

#: Short enough to run in seconds, with validations (every 5) and checkpoints (every 10) between.
SETTINGS = {"max_steps": 30, "eval_every": 5, "checkpoint_every": 10, "keep_checkpoints": 3}


def test_the_first_signal_is_recorded_and_the_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert stop.requested is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert (stop.requested, stop.exit_code) == ("SIGTERM", 128 + signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(KeyboardInterrupt), StopSignals(at_once=True):
        os.kill(os.getpid(), signal.SIGHUP)


def test_a_second_signal_ends_the_process_at_once() -> None:
    code = (
        "import os, signal, time\n"
        "from src.train.stopping import StopSignals\n"
        "with StopSignals():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "print('not reached')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGINT and "not reached" not in result.stdout


@pytest.mark.parametrize("through_a_shell", [False, True], ids=["direct", "through-sh-c"])
def test_the_end_of_the_parent_process_asks_for_a_stop(through_a_shell: bool, tmp_path: Path) -> None:
    """``kill -TERM <dvc pid>`` leaves the stage DVC started running on its own: it must notice. DVC
    starts it through ``$SHELL -c``, and a shell that stays its parent (dash, or any shell given
    more than one command) outlives DVC: then the shell's parent is the one watched."""
    report = tmp_path / "report"
    child = (
        "import time, sys\n"
        "from src.train.stopping import StopSignals\n"
        "from src.utils.parent_watch import watch_parent\n"
        "watch_parent(poll_s=0.05)\n"
        "with StopSignals() as stop:\n"
        "    deadline = time.monotonic() + 30\n"
        "    while stop.requested is None and time.monotonic() < deadline:\n"
        "        time.sleep(0.05)\n"
        f"    open({str(report)!r}, 'w').write(str(stop.requested))\n"
    )
    command = f"[sys.executable, '-c', {child!r}]"
    if through_a_shell:  # "; true" keeps the shell from replacing itself with the command
        command = f"['/bin/sh', '-c', shlex.join([sys.executable, '-c', {child!r}]) + '; true']"
    parent = f"import shlex, subprocess, sys, time\nsubprocess.Popen({command})\ntime.sleep(1)\n"
    subprocess.run([sys.executable, "-c", parent], timeout=60, check=True)
    deadline = time.monotonic() + 30
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert report.read_text() == PARENT_EXITED


def test_a_lock_is_refused_while_held_and_free_once_its_holder_is_gone(tmp_path: Path) -> None:
    lock = tmp_path / "run-x" / ".lock"
    with exclusive_lock(lock, "a training of this configuration"):
        assert is_held(lock)
        with (
            pytest.raises(PipelineError) as refused,
            exclusive_lock(lock, "a training of this configuration"),
        ):
            pass
        assert str(refused.value).startswith(
            f"{lock}: a training of this configuration is already running (pid {os.getpid()} on "
        )
    assert not lock.parent.exists()  # made for the lock alone: removed with it
    nested = tmp_path / "checkpoints" / "run-y" / ".lock"
    with exclusive_lock(nested, "a training of this configuration"):
        pass
    assert not (tmp_path / "checkpoints").exists()  # every folder it had to make
    lock.parent.mkdir()
    take = (
        f"import fcntl, os, time; fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", take], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n" and is_held(lock)
    holder.kill()  # as kill -9 would: no clean-up runs
    holder.wait()
    assert not is_held(lock) and lock.exists()  # a killed holder leaves the file
    with exclusive_lock(lock, "a training of this configuration"):
        pass
    assert not lock.exists()  # the next holder removes it: a killed run ends as any other


def wait_for(process: subprocess.Popen, text: str, log: Path, timeout: float = 300) -> None:
    """Until ``text`` appears in ``log`` (the process's stderr)."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text in log.read_text(), log.read_text()[-3000:]


def started(command: list[str], log: Path, pause: str) -> tuple[subprocess.Popen, Path]:
    """``command`` in the background, once it pauses at ``pause``, and the file that lets it go on."""
    release = log.with_suffix(".release")
    env = {**os.environ, "LMPIPE_PAUSE_AT": pause, "LMPIPE_PAUSE_UNTIL": str(release)}
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env, cwd=log.parent
    )
    wait_for(process, f"pause point {pause}", log)
    return process, release


@pytest.fixture(scope="module")
def straight(make_params, train_command, tmp_path_factory) -> Path:
    """One uninterrupted run of :data:`SETTINGS`."""
    params = make_params(tmp_path_factory.mktemp("straight") / "run", **SETTINGS)
    subprocess.run(train_command(params), check=True, timeout=600, capture_output=True)
    return params.parent


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "point", "step"),
    [
        (signal.SIGTERM, "train.after-step-13", 13),  # between checkpoints: one of its own at step 13
        (signal.SIGINT, "train.after-step-5", 5),  # a validating step: it stops after the validation
        (signal.SIGHUP, "train.after-step-10", 10),  # the periodic checkpoint's step: written once
    ],
    ids=["SIGTERM-between-checkpoints", "SIGINT-at-a-validation", "SIGHUP-at-a-checkpoint"],
)
def test_a_stopped_run_checkpoints_at_the_next_step_and_resumes_exactly(
    stop, point, step, straight, make_params, train_command, mlflow_runs, metric_history, tmp_path: Path
) -> None:
    params = make_params(tmp_path / "run", **SETTINGS)
    log = tmp_path / "stderr.log"
    process, release = started(train_command(params), log, point)
    process.send_signal(stop)
    wait_for(process, "stopping after the next step's checkpoint", log)
    release.touch()
    assert process.wait(timeout=120) == 128 + stop
    said = log.read_text().strip().splitlines()
    assert said[-1].startswith(f"stopped: training stopped by {signal.Signals(stop).name} at step {step}; ")
    assert "Traceback" not in log.read_text()
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.glob("run-*/step-*.ckpt"))[-1] == f"step-{step:09d}.ckpt"
    assert not (tmp_path / "run" / "metrics.json").exists()
    uri = f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    assert [run.info.status for run in mlflow_runs(uri)] == ["KILLED"]

    resumed = subprocess.run(train_command(params), check=True, timeout=600, capture_output=True, text=True)
    expected = json.loads((straight / "metrics.json").read_text())
    found = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("train_loss", "val_loss", "val_bpb", "tokens_seen"):
        assert found[key] == pytest.approx(expected[key], abs=1e-6), key
    runs = mlflow_runs(uri)
    assert len(runs) == 1, resumed.stderr[-3000:]
    (run,) = runs
    (reference,) = mlflow_runs(f"sqlite:///{straight / 'mlflow.db'}")
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_loss", "lr"):
        resumed = metric_history(uri, run.info.run_id, key)
        uninterrupted = metric_history(f"sqlite:///{straight / 'mlflow.db'}", reference.info.run_id, key)
        assert [s for s, _ in resumed] == [s for s, _ in uninterrupted], key  # each step once
        assert [v for _, v in resumed] == pytest.approx([v for _, v in uninterrupted], abs=1e-6), key


@pytest.mark.slow
def test_a_second_training_of_one_configuration_is_refused_and_changed_params_write_nothing(
    make_params, train_command, mlflow_runs, tmp_path: Path
) -> None:
    params = make_params(tmp_path / "run", **SETTINGS)
    first_log = tmp_path / "first.log"
    first, release = started(train_command(params), first_log, "train.after-step-12")
    second = subprocess.run(train_command(params), capture_output=True, text=True, timeout=600)
    assert second.returncode == 2, second.stderr[-3000:]
    lines = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "a training of this configuration is already running (pid " in lines[0]
    assert f"pid {first.pid} on " in lines[0] and "Traceback" not in second.stderr

    # Meanwhile the params file is rewritten (a colleague's dvc exp run -S in the same workspace).
    data = yaml.safe_load(params.read_text())
    data["train"]["lr"] = 0.002
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    release.touch()
    assert first.wait(timeout=600) == 2
    error = [line for line in first_log.read_text().splitlines() if line.startswith("error:")]
    assert len(error) == 1 and error[0].startswith(
        "error: the train stage's inputs changed while it ran (train.lr: 0.003 -> 0.002): its outputs "
        "would be recorded under inputs they were not made from, so none were written"
    ), first_log.read_text()[-3000:]
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "model").exists()
    assert len(list((tmp_path / "run" / "checkpoints").glob("run-*/step-000000030.ckpt"))) == 1  # kept
    uri = f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    assert [run.info.status for run in mlflow_runs(uri)] == ["FAILED"]
