"""Serve the MLflow UI on the project's store and print the address of its training view: ``make ui``.

MLflow 3 opens on its GenAI view unless told otherwise; the printed address opens
the project's experiment on its runs (``workflowType=machine_learning``), where
the DVC experiments, their params, curves, datasets and models are.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from src.cli import run_cli
from src.config import PARAMS_FILE, load_params
from src.errors import PipelineError
from src.train.mlflow_store import sqlite_path, tracking_uri
from src.utils.redact import redact_uri


def ui_address(host: str, port: int, experiment_id: str | None) -> str:
    """The UI's address, on the experiment's training view when there is one."""
    base = f"http://{host}:{port}/"
    return f"{base}#/experiments/{experiment_id}?workflowType=machine_learning" if experiment_id else base


def find_experiment(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in the store, without creating the store if it is not there yet."""
    database = sqlite_path(uri)
    if database is None or not database.is_file():
        return None
    from mlflow import MlflowClient

    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return experiment.experiment_id if experiment else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.mlflow_ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: this machine only)"
    )
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    uri = tracking_uri(params.mlflow)
    if sqlite_path(uri) is None:
        raise PipelineError(
            f"mlflow.tracking_uri: runs go to the server {redact_uri(uri)}; open its UI there"
        )
    address = ui_address(args.host, args.port, find_experiment(uri, params.mlflow.experiment_name))
    print(f"MLflow UI of {uri}: {address}", flush=True)
    mlflow = shutil.which("mlflow") or sys.exit("mlflow is not installed here; run `make setup`")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    os.execve(mlflow, [*command, "--workers", "1"], env)  # the UI takes this process over (Ctrl-C ends it)


if __name__ == "__main__":
    run_cli(main)
