"""MLflow tracking: one run per training run, created by the driver and reattached on resume.

A DVC experiment and its MLflow run match one to one: the run is named after the experiment and
tagged with its name, its baseline commit and the hashes of the data it trained on
(:mod:`src.train.provenance`); where the runs go is :mod:`src.train.mlflow_store`.

A tracking server may go away while a training runs. Training does not wait for it: metrics stay
queued (in memory, and in every checkpoint's history) and are sent once it answers again. After
training the outputs are written first, then the run is completed in MLflow; a store that still
fails then is one line that says so, and the same command run again resumes from the last
checkpoint and logs what the run lacks.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.paths import display_path
from src.train.mlflow_store import (
    failure_reason,
    local_artifact_root,
    one_attempt,
    sqlite_path,
    store_errors,
    store_failures,
    store_lock,
)
from src.train.provenance import EXP_NAME_TAG
from src.utils.faults import kill_point
from src.utils.files import check_writable
from src.utils.redact import redact_uri

log = logging.getLogger(__name__)

#: MLflow's mark for an experiment of model training: its UI then opens on the runs, not on traces.
EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"

#: The store keeps at most this many characters of a dataset digest (the full hash is a run tag).
DATASET_DIGEST_CHARS = 32


class RunTracker:
    """Logs to one MLflow run through the client API (no global active-run state)."""

    def __init__(self, uri: str, experiment_name: str | None, *, run_id: str | None = None) -> None:
        """Open the store and the experiment; with ``run_id``, log into that existing run instead
        (a Ray worker logging into the run its driver created)."""
        from mlflow import MlflowClient

        self.run_id = run_id
        self._pending: list = []
        """Metrics queued for the run, oldest first; one leaves only once the store has taken it."""
        self._held: set[tuple[str, int]] = set()
        """The (metric, step) pairs the run held when this tracker took it over, and those queued since:
        each pair is sent once."""
        self._away = False
        """The last flush failed: the store may hold part of what it was sent, and a warning is out."""
        if run_id is not None:
            self.client = MlflowClient(tracking_uri=uri)
            self._held = self._logged_pairs()
            return
        database = sqlite_path(uri)
        if database is not None:
            check_writable("mlflow.tracking_uri", database, kind="file")
        with store_lock(uri), store_errors(uri):
            # Opening a SQLite store creates and migrates its tables: parallel runs must not race there.
            self.client = MlflowClient(tracking_uri=uri)
            experiment = self.client.get_experiment_by_name(experiment_name)
            if experiment is None:
                self.experiment_id = self.client.create_experiment(
                    experiment_name,
                    artifact_location=local_artifact_root(uri),
                    tags={EXPERIMENT_KIND_TAG: TRAINING_KIND},
                )
            else:
                self.experiment_id = experiment.experiment_id
                if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an older version
                    self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)

    def end_orphans(self) -> list[str]:
        """Mark KILLED the runs of this experiment left RUNNING by a process of this machine that is gone.

        A run killed before it could close itself (SIGKILL, a lost machine) would otherwise stay
        RUNNING forever; runs of live processes, or of other machines, are left alone.
        """
        query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'"
        ended = []
        for run in self.client.search_runs([self.experiment_id], filter_string=query, max_results=1000):
            pid = run.data.tags.get(PID_TAG, "")
            if run.info.run_id != self.run_id and pid.isdigit() and not _process_alive(int(pid)):
                self.client.set_terminated(run.info.run_id, status="KILLED")
                ended.append(run.info.run_id)
        return ended

    def claim(self) -> None:
        """Record which process of which machine runs the training (see :meth:`end_orphans`)."""
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in owner_tags().items()])

    def start(self, run_name: str | None, tags: Mapping[str, str], params: Mapping[str, str]) -> str:
        """Create the run, owned by this process from its first instant (a run killed before it
        recorded its owner would stay RUNNING for ever), and log every param and tag."""
        from mlflow.entities import Param, RunTag

        run = self.client.create_run(
            self.experiment_id, run_name=run_name, tags={**owner_tags(), **dict(tags)}
        )
        self.run_id = run.info.run_id
        kill_point("mlflow.run-created")
        items = [Param(k, redact_uri(v)) for k, v in params.items()]  # no password in a param
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return self.run_id

    def reattach(self, run_id: str, run_name: str | None) -> bool:
        """Continue the run of an interrupted training; False if it was deleted or has finished.

        A finished run belongs to a completed training (and maybe to another DVC
        experiment), so a new one is started instead. The run takes the name of
        the experiment that now continues it: DVC names each attempt anew.
        """
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        try:
            info = self.client.get_run(run_id).info
        except MlflowException:
            return False
        if info.lifecycle_stage != "active" or info.status == "FINISHED":
            return False
        self.run_id = run_id
        self.claim()  # before it is RUNNING again, so a kill in between leaves it to end_orphans
        self.client.update_run(run_id, status="RUNNING", name=run_name or None)
        if run_name:
            self.client.log_batch(run_id, tags=[RunTag(EXP_NAME_TAG, run_name)])
        self._held = self._logged_pairs()
        return True

    def _logged_pairs(self) -> set[tuple[str, int]]:
        """Every (metric, step) the run holds."""
        keys = self.client.get_run(self.run_id).data.metrics
        return {
            (key, metric.step) for key in keys for metric in self.client.get_metric_history(self.run_id, key)
        }

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, flush: bool = False) -> None:
        """Queue metrics for the run; they are sent by :meth:`flush`.

        Training flushes when it writes a checkpoint, so after a kill MLflow holds the steps the
        checkpoint holds. A kill later in the run (after the final flush, while the outputs are
        written) leaves MLflow ahead of the newest checkpoint, and the resumed run computes those
        steps again, to the same values: a (metric, step) the run already held when this tracker
        took it over, or one queued already, is not sent again, so MLflow keeps each once, as in an
        uninterrupted run.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if (key, step) not in self._held:
                self._held.add((key, step))
                self._pending.append(Metric(key, float(value), now, step))
        if flush:
            self.flush()

    def log_missing(self, rows: list[tuple[dict[str, float], int]]) -> None:
        """Log the (metrics, step) rows the run does not hold yet (a checkpoint's history, on resume);
        a store that fails is raised."""
        for metrics, step in rows:
            self.log_metrics(metrics, step)
        self.flush(required=True)

    def complete(self, rows: list[tuple[dict[str, float], int]]) -> None:
        """After training: make the run hold every (metrics, step) row of the training's history.

        On Ray, rank 0 logs from its own process, and what it could not send before it
        finished (a server that was away) ends with it; the driver sends those rows here.
        What the store holds is read back first, so nothing is sent twice.
        """
        self._unqueue_held()
        self.log_missing(rows)

    def flush(self, *, required: bool = False) -> bool:
        """Send the queued metrics; True once the run holds them all.

        During training (``required`` false) a store that does not take them costs one attempt
        (see :func:`one_attempt`), not minutes of retries: the metrics stay queued for the next
        flush, and one warning says so (and one line when the store answers again). Nothing is
        dropped or sent twice. With ``required`` the store's failure is raised (the start and the
        end of a run: what :func:`store_errors` turns into one line).
        """
        if not self._pending:
            return True
        try:
            if required:
                self._send()
            else:
                with one_attempt():
                    self._send()
        except store_failures() as error:
            if required:
                raise
            if not self._away:
                self._away = True
                log.warning(
                    "%s does not answer (%s); training goes on: metrics are kept and sent when it does",
                    self._store_name(),
                    failure_reason(error),
                )
            return False
        return True

    def _send(self) -> None:
        if self._away:  # a request that failed may still have reached the store
            self._unqueue_held()
        while self._pending:
            batch = self._pending[:1000]
            self.client.log_batch(self.run_id, metrics=batch)
            del self._pending[: len(batch)]

    def _unqueue_held(self) -> None:
        """Read back what the run holds (the store answers, then) and unqueue those metrics."""
        held = self._logged_pairs()
        self._pending = [m for m in self._pending if (m.key, m.step) not in held]
        self._held = held | {(m.key, m.step) for m in self._pending}
        if self._away:
            self._away = False
            log.info("%s answers again: sending the metrics kept meanwhile", self._store_name())

    def _store_name(self) -> str:
        database = sqlite_path(self.client.tracking_uri)
        if database is None:
            return redact_uri(f"MLflow server {self.client.tracking_uri}")
        return f"MLflow store {display_path(database)}"

    def log_dataset(self, name: str, digest: str, source: str, profile: Mapping[str, Any]) -> None:
        """Record the data the run trained and validated on (the UI's Dataset column)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name,
            digest=digest[:DATASET_DIGEST_CHARS],
            source_type="local",
            source=json.dumps({"uri": source}),
            profile=json.dumps(dict(profile), sort_keys=True),
        )
        context = InputTag("mlflow.data.context", "training")
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags=[context])])

    def log_model(self, model: Any, tokenizer: Any, input_example: str, registered_name: str | None) -> str:
        """Log a ``transformers`` model as the run's MLflow model (and register a version); its URI.

        Only the fluent API logs a model; it is pointed at the run's store for this call alone and
        given the run, and a model entry made here in the run's experiment, by id. (Making the run
        active instead would end it, FINISHED, on leaving the block, before the outputs are
        complete: a kill then would leave a finished run that the resumed training cannot continue.)
        A model that an interrupted attempt of this run logged is deleted first: the run keeps one.
        """
        import mlflow
        import mlflow.transformers

        run = self.client.get_run(self.run_id)
        experiment_id = run.info.experiment_id
        earlier = self.client.search_logged_models(
            [experiment_id], filter_string=f"source_run_id = '{self.run_id}'"
        )
        for logged in earlier:
            self.client.delete_logged_model(logged.model_id)
        source = {
            k: v for k, v in run.data.tags.items() if k.startswith("mlflow.source.") or k == "mlflow.user"
        }
        entry = self.client.create_logged_model(
            experiment_id, name="model", source_run_id=self.run_id, tags=source, params=run.data.params
        )
        previous = mlflow.get_tracking_uri()
        chatty = logging.getLogger("mlflow.transformers")  # no model card or license offline: expected
        level = chatty.level
        mlflow.set_tracking_uri(self.client.tracking_uri)
        chatty.setLevel(logging.ERROR)
        try:
            info = mlflow.transformers.log_model(
                {"model": model, "tokenizer": tokenizer},
                name="model",
                task="text-generation",
                input_example=input_example,
                registered_model_name=registered_name or None,
                pip_requirements=_pinned(("torch", "transformers", "tokenizers")),
                run_id=self.run_id,
                model_id=entry.model_id,
            )
        finally:
            chatty.setLevel(level)
            mlflow.set_tracking_uri(previous)
        return info.model_uri

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Send what is queued and end the run; a store that fails is raised."""
        self.flush(required=True)
        kill_point("mlflow.run-ending")
        self.client.set_terminated(self.run_id, status=status)

    def abandon(self, status: str) -> None:
        """End the run of a training that failed or was stopped, if the store answers at once.

        The error that stopped the training is the one to report; a store that does not answer
        is only logged (the run stays RUNNING: the next training of these settings continues it,
        or marks it KILLED).
        """
        try:
            with one_attempt():
                self._send()
                self.client.set_terminated(self.run_id, status=status)
        except store_failures() as error:
            log.warning(
                "%s does not answer (%s); its run is left RUNNING", self._store_name(), failure_reason(error)
            )


HOST_TAG, PID_TAG = "lmpipe.host", "lmpipe.pid"


def owner_tags() -> dict[str, str]:
    """The machine and process that run the training: a run whose process is gone is an orphan."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def _pinned(packages: tuple[str, ...]) -> list[str]:
    """``name==version`` of installed packages (MLflow would otherwise guess, and ask for torchvision)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in packages]
