"""End to end: queued DVC experiments in parallel, each with exactly one MLflow run in the project's store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

LEARNING_RATES = ("0.001", "0.01")


def start_queue(project: Path, jobs: int, env: dict[str, str]) -> None:
    """``dvc queue start -j N``; its workers live on, so their output must not be a pipe we wait on."""
    subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=120,
    )


def stop_workers(dvc, project: Path, timeout_s: float = 60) -> None:
    """``dvc queue stop``, wait for every worker to exit, and end any that does not.

    Known races between parallel DVC queue workers can leave one idle, or deaf
    to ``stop`` after its monitor thread died (the README says so); the test
    must not leave such a process behind.
    """
    dvc(project, "queue", "stop")
    deadline = time.monotonic() + timeout_s
    for pid_file in (project / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
        pid = int(pid_file.read_text().strip() or 0)
        while pid and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def wait_for_queue(dvc, project: Path, timeout_s: float = 600) -> tuple[set[str], set[str]]:
    """Poll until no experiment is queued or running.

    Returns the temporary experiment copies seen meanwhile (DVC makes them in
    ``.dvc/tmp/exps/tmp*``) and every MLflow store or artifact folder seen inside one.
    """
    copies: set[str] = set()
    stores: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for copy in (project / ".dvc" / "tmp" / "exps").glob("tmp*"):
            copies.add(copy.name)
            stores |= {
                str(path.relative_to(project))
                for pattern in ("mlflow.db*", "mlruns")
                for path in copy.rglob(pattern)
            }
        status = dvc(project, "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return copies, stores
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {timeout_s} s:\n{status}")


def experiments(shown: list[dict]) -> dict[str, dict]:
    """``dvc exp show --json`` -> {experiment name: {"params": ..., "metrics": ...}}."""
    found = {}
    for baseline in shown:
        for group in baseline.get("experiments") or []:
            for revision in group["revs"]:
                data = revision["data"]
                found[revision["name"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": data["metrics"]["metrics.json"]["data"],
                }
    return found


def test_queued_experiments_run_in_parallel_with_one_mlflow_run_each(
    dvc, dvc_project: Path, tool_env, free_port: int
) -> None:
    project = dvc_project  # reproduced once for the session; its MLflow store was removed
    for lr in LEARNING_RATES:
        dvc(project, "exp", "run", "--queue", "-S", f"train.lr={lr}")
    start_queue(project, jobs=2, env=tool_env())
    copies, in_temp_copies = wait_for_queue(dvc, project)
    stop_workers(dvc, project)
    assert copies, "no temporary experiment copy was seen: the check below would prove nothing"
    assert in_temp_copies == set()  # no store or artifacts were ever created in DVC's temporary copies

    status = dvc(project, "queue", "status").stdout
    assert status.count("Success") == 2, status
    found = experiments(json.loads(dvc(project, "exp", "show", "--json").stdout))
    assert sorted(str(exp["params"]["train"]["lr"]) for exp in found.values()) == sorted(
        str(float(lr)) for lr in LEARNING_RATES
    )
    for name in found:  # the cached download and tokenize outputs were reused
        log = dvc(project, "queue", "logs", name).stdout
        assert "Running stage 'train'" in log
        assert "Running stage 'tokenize@kjv'" not in log and "Running stage 'download@kjv'" not in log

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lmpipe")
    runs = client.search_runs([experiment.experiment_id])
    by_name = {}
    for run in runs:
        by_name.setdefault(run.info.run_name, []).append(run)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    tokens_md5 = lock["stages"]["tokenize@kjv"]["outs"][0]["md5"]
    for name, exp in found.items():
        (run,) = by_name[name]  # exactly one run per experiment, named after it
        assert run.info.status == "FINISHED"
        assert run.data.tags["dvc.exp_name"] == name
        assert len(run.data.tags["dvc.baseline_rev"]) == 40
        assert run.data.tags["dvc.tokenized.kjv.md5"] == tokens_md5
        assert float(run.data.params["train.lr"]) == float(exp["params"]["train"]["lr"])
        for key, value in exp["metrics"].items():
            assert run.data.metrics[key] == pytest.approx(value), (name, key)
        assert run.info.artifact_uri.startswith((project / "mlruns").as_uri())
    assert len(runs) == len(LEARNING_RATES)  # the store only ever saw the two experiments

    check_ui_lists_runs(project, sorted(found), free_port, tool_env())


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def check_ui_lists_runs(project: Path, names: list[str], port: int, env: dict[str, str]) -> None:
    """``make ui`` serves the project's store on 127.0.0.1; its REST API lists the runs."""
    server = subprocess.Popen(
        ["make", "--no-print-directory", "-o", "setup", "ui", f"UI_PORT={port}"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # one process group: make, mlflow and its server worker
    )
    try:
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/experiments/search?max_results=10", timeout=5) as reply:
                    experiment_id = json.load(reply)["experiments"][0]["experiment_id"]
                break
            except OSError:
                assert server.poll() is None, "make ui exited"
                assert time.monotonic() < deadline, "the UI did not answer within 120 s"
                time.sleep(0.5)
        request = urllib.request.Request(
            f"{base}/runs/search",
            data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            listed = {run["info"]["run_name"] for run in json.load(reply)["runs"]}
        assert set(names) <= listed
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        deadline = time.monotonic() + 60
        while group_alive(server.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not group_alive(server.pid), "the UI's processes outlived SIGTERM"
    with pytest.raises(ConnectionRefusedError):  # nothing was left serving
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
