"""MLflow tracking: one run per training run, created by the driver and reattached on resume.

The default store is the SQLite file ``mlflow.db`` at the root of the user's
checkout, given as an absolute URI so a run started from any folder, or from
the temporary copy DVC makes for a queued experiment, lands in the same store;
artifacts of a SQLite store go to ``mlruns/`` beside the database.

A DVC experiment and its MLflow run match one to one: the run is named after
the experiment and tagged with its name, its baseline commit and the hashes of
the data it trained on.

A tracking server may go away while a training runs. Training does not wait for
it: metrics stay queued (in memory, and in every checkpoint's history) and are
sent once it answers again. After training the outputs are written first, then
the run is completed in MLflow; a store that still fails then is one line that
says so, and the same command run again resumes from the last checkpoint and
logs what the run lacks.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from src.config import MlflowConfig
from src.data.manifests import MANIFEST
from src.data.token_files import TokenFolder
from src.errors import PipelineError, first_line
from src.paths import PROJECT_ROOT, display_path, workspace_root
from src.utils.faults import kill_point
from src.utils.files import check_writable
from src.utils.redact import redact_uri

_SQLITE = "sqlite:///"

log = logging.getLogger(__name__)

#: MLflow's mark for an experiment of model training: its UI then opens on the runs, not on traces.
EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"

#: The store keeps at most this many characters of a dataset digest (the full hash is a run tag).
DATASET_DIGEST_CHARS = 32


def tracking_uri(config: MlflowConfig, root: Path = PROJECT_ROOT) -> str:
    """``mlflow.tracking_uri``, or ``mlflow.db`` in the user's checkout; relative SQLite paths start there."""
    uri = config.tracking_uri or f"{_SQLITE}mlflow.db"
    database = sqlite_path(uri)
    if database is not None and not database.is_absolute():
        return f"{_SQLITE}{(workspace_root(root) / database).resolve()}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative if the URI is), or None for a server."""
    return Path(uri[len(_SQLITE) :]) if uri.startswith(_SQLITE) else None


def local_artifact_root(uri: str) -> str | None:
    """For a SQLite store, ``mlruns/`` beside the database file (MLflow would use the current folder)."""
    database = sqlite_path(uri)
    if database is None:
        return None  # a server decides where its artifacts go
    return (database.parent / "mlruns").resolve().as_uri()


def store_failures() -> tuple[type[BaseException], ...]:
    """What MLflow raises when its store cannot be used: its own errors, SQLAlchemy's for a SQLite
    file, and the HTTP library's for an artifact upload to a server that went away."""
    from mlflow.exceptions import MlflowException
    from requests import RequestException
    from sqlalchemy.exc import SQLAlchemyError

    return MlflowException, SQLAlchemyError, RequestException


#: What the one line says once training is over: nothing is lost, and how the run is completed.
_OUTPUTS_KEPT = (
    "the model, metrics.json and checkpoints are written; {fix}, then run the same command (or dvc repro) "
    "again: it resumes from the last checkpoint and completes the MLflow run"
)


@contextmanager
def store_errors(uri: str, *, ending: bool = False) -> Iterator[None]:
    """Turn a store that cannot be used into one line naming it: a damaged or read-only SQLite
    file, or a server that does not answer (the libraries raise tracebacks several screens long).

    With ``ending`` (the last metrics, the artifacts, the model, the run's end, after training),
    the line also says that the outputs are written and how to complete the run.
    """
    try:
        yield
    except store_failures() as error:
        reason = _reason(error)
        database = sqlite_path(uri)
        if database is None:
            fix = (
                _OUTPUTS_KEPT.format(fix="start it")
                if ending
                else 'start the server, or set mlflow.tracking_uri to "" for mlflow.db at the project root'
            )
            server = "the MLflow server " if ending else ""
            raise PipelineError(
                redact_uri(f"mlflow.tracking_uri: cannot reach {server}{uri} ({reason}); ") + fix
            ) from None
        fix = (
            _OUTPUTS_KEPT.format(fix=_sqlite_fix(reason))
            if ending
            else f"{_sqlite_fix(reason)}, or set mlflow.tracking_uri to another store"
        )
        raise PipelineError(
            f"mlflow.tracking_uri: cannot use the MLflow store {display_path(database)} ({reason}); {fix}"
        ) from None


def _sqlite_fix(reason: str) -> str:
    if "readonly" in reason or "read-only" in reason:
        return "make it (and its folder) writable"
    if "not a database" in reason or "malformed" in reason:
        return "it is damaged: move it away to start a new store"
    return "repair or move it away"


@contextmanager
def _one_attempt() -> Iterator[None]:
    """Make MLflow's HTTP requests in this block without retries.

    By default MLflow's client retries a failed request with growing pauses for minutes
    (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, read at each request); during training a server that is
    away would stall every checkpoint that long. One attempt costs at most one request timeout
    (``MLFLOW_HTTP_REQUEST_TIMEOUT``), nothing for a server that refuses the connection.
    The variable is the process's: set only around the tracker's own requests, from one thread.
    """
    name = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    saved = os.environ.get(name)
    os.environ[name] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


#: What an HTTP client's error says about the connection, most telling first: MLflow wraps it in
#: the URL and the retries ("[Errno 111] Connection refused", a server killed mid-request, a timeout).
_CONNECTION_FAILURES = (
    re.compile(r"\[Errno -?\d+\] [^'\")]+"),
    re.compile(r"Remote end closed connection without response|Connection reset by peer|Connection aborted"),
    re.compile(r"timed out", re.IGNORECASE),
)


def _reason(error: BaseException) -> str:
    """The first line of the root cause (SQLAlchemy wraps the driver's message in several more),
    or what happened to the connection to a server."""
    text = first_line(getattr(error, "orig", None) or error, 2000)
    for pattern in _CONNECTION_FAILURES:
        found = pattern.search(text)
        if found:
            return found.group(0).strip()
    return text[:200]


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """One process at a time creates a SQLite store and its experiment (parallel queued runs race there)."""
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
        with _store_lock(uri), store_errors(uri):
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
        (see :func:`_one_attempt`), not minutes of retries: the metrics stay queued for the next
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
                with _one_attempt():
                    self._send()
        except store_failures() as error:
            if required:
                raise
            if not self._away:
                self._away = True
                log.warning(
                    "%s does not answer (%s); training goes on: metrics are kept and sent when it does",
                    self._store_name(),
                    _reason(error),
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
            with _one_attempt():
                self._send()
                self.client.set_terminated(self.run_id, status=status)
        except store_failures() as error:
            log.warning(
                "%s does not answer (%s); its run is left RUNNING", self._store_name(), _reason(error)
            )


EXP_NAME_TAG = "dvc.exp_name"
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


def dvc_experiment_name() -> str | None:
    """The DVC experiment being run (``dvc exp run`` sets ``DVC_EXP_NAME``), or None.

    Not to be confused with ``mlflow.experiment_name``, the MLflow experiment that
    holds the runs: each DVC experiment is one run in it, named after the DVC experiment.
    """
    return os.environ.get("DVC_EXP_NAME") or None


def _pinned(packages: tuple[str, ...]) -> list[str]:
    """``name==version`` of installed packages (MLflow would otherwise guess, and ask for torchvision)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in packages]


def source_tags(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """MLflow's own tags for where a run came from: the UI's User, Source and Version columns."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    name = display_path(script.resolve(), root) if script is not None and script.is_file() else "python"
    tags = {"mlflow.source.name": name, "mlflow.source.type": "LOCAL", "mlflow.user": getpass.getuser()}
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def run_tags(sources: Sequence[TokenFolder], root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Tags that tie a run to its code, its DVC experiment and the exact data it trained on
    (``data.<dataset>.*`` for each token folder)."""
    tags = {}
    for source in sources:
        prefix = f"data.{source.name}"
        tags[f"{prefix}.tokens.manifest_sha256"] = source.manifest_sha256
        for split, entry in source.manifest.splits.items():
            tags[f"{prefix}.tokens.{split}_sha256"] = entry.sha256
        source_manifest = source.manifest.source.files.get(MANIFEST)
        if source_manifest:
            tags[f"{prefix}.export.manifest_sha256"] = source_manifest
        dvc_md5 = locked_out_md5(source.path, root)
        if dvc_md5:
            tags[f"dvc.tokenized.{source.name}.md5"] = dvc_md5  # as ``dvc.lock`` has it for this folder
    tags.update(source_tags(root))
    if dvc_experiment_name():
        tags[EXP_NAME_TAG] = dvc_experiment_name()
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if baseline:
        tags["dvc.baseline_rev"] = baseline
    return tags


def locked_out_md5(out: Path, root: Path = PROJECT_ROOT) -> str | None:
    """The md5 that ``dvc.lock`` records for the stage output at ``out``, if any."""
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    wanted = display_path(out, root)
    for stage in (lock.get("stages") or {}).values():
        for entry in stage.get("outs") or []:
            if entry.get("path") == wanted and entry.get("md5"):
                return str(entry["md5"])
    return None
