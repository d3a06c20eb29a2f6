"""MLflow tracking: one run per training run, created by the driver and reattached on resume.

The default store is the SQLite file ``mlflow.db`` at the project root, given as
an absolute URI so a run started from any folder lands in the same store;
artifacts of a SQLite store go to ``mlruns/`` beside the database.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.config import MlflowConfig
from src.errors import PipelineError
from src.paths import PROJECT_ROOT

#: Metrics are sent in batches: one SQLite transaction per step would slow training.
_FLUSH_EVERY_S = 5.0


def tracking_uri(config: MlflowConfig, root: Path = PROJECT_ROOT) -> str:
    """``mlflow.tracking_uri``, or the project's own SQLite store."""
    return config.tracking_uri or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def local_artifact_root(uri: str) -> str | None:
    """For a SQLite store, ``mlruns/`` beside the database file (MLflow would use the current folder)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None  # a server decides where its artifacts go
    return (Path(uri[len(prefix) :]).parent / "mlruns").resolve().as_uri()


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": "0.1"}``: every params value as an MLflow param."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


class RunTracker:
    """Logs to one MLflow run through the client API (no global active-run state)."""

    def __init__(self, uri: str, experiment_name: str) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.client = MlflowClient(tracking_uri=uri)
        try:
            experiment = self.client.get_experiment_by_name(experiment_name)
        except MlflowException as error:
            raise PipelineError(
                f"mlflow.tracking_uri: cannot reach {uri} ({str(error).strip().splitlines()[0][:200]}); "
                'start the server, or set mlflow.tracking_uri to "" to use mlflow.db at the project root'
            ) from None
        if experiment is not None:
            self.experiment_id = experiment.experiment_id
        else:
            location = local_artifact_root(uri)
            self.experiment_id = self.client.create_experiment(experiment_name, artifact_location=location)
        self.run_id: str | None = None
        self._pending: list = []
        self._last_flush = time.monotonic()

    def start(self, run_name: str | None, tags: Mapping[str, str], params: Mapping[str, str]) -> str:
        from mlflow.entities import Param, RunTag

        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        self.run_id = run.info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return self.run_id

    def reattach(self, run_id: str) -> bool:
        """Continue an existing run (a resumed training run); False if it no longer exists."""
        from mlflow.exceptions import MlflowException

        try:
            if self.client.get_run(run_id).info.lifecycle_stage != "active":
                return False
        except MlflowException:
            return False
        self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        return True

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, flush: bool = False) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if flush or time.monotonic() - self._last_flush > _FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            self.client.log_batch(self.run_id, metrics=batch)
        self._last_flush = time.monotonic()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)


def run_tags(token_manifest_sha256: str, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Tags that tie a run to its code, its DVC experiment and its data."""
    tags = {"tokens.manifest_sha256": token_manifest_sha256}
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    exp_name = os.environ.get("DVC_EXP_NAME")
    if exp_name:
        tags["dvc.exp_name"] = exp_name
    return tags
