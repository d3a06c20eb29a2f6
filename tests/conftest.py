"""Shared fixtures.

The suite never imports itself as a package named ``tests`` (a dependency ships
one into site-packages), so helpers live here as fixtures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from src.paths import PROJECT_ROOT

KJV_LINES = 3000
TINY_MODEL = {"n_layer": 2, "n_head": 2, "n_embd": 16}
TINY_TRAIN = {
    "max_length": 32,
    "batch_size": 4,
    "max_steps": 20,
    "warmup_steps": 2,
    "eval_every": 5,
    "checkpoint_every": 10,
    "sample_tokens": 8,
}


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep Hugging Face's own files out of the home folder and the project while testing."""
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf_home"))
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def run_python(
    *args: str | Path, cwd: Path = PROJECT_ROOT, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the project's interpreter on ``args`` and capture its output."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def python_runner():
    return run_python


def run_dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``dvc`` in ``project`` with the project's interpreter first on PATH (stages call ``python``)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def dvc():
    """``dvc(project, *args, check=True)``: run DVC as a user would and return the finished process."""
    return run_dvc


class StaticServer:
    """A local HTTP server on 127.0.0.1 serving one folder and recording GET requests."""

    def __init__(self, folder: Path) -> None:
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[StaticServer]:
    folder = tmp_path / "served"
    folder.mkdir()
    server = StaticServer(folder)
    server.folder = folder  # type: ignore[attr-defined]
    yield server
    server.close()


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A fresh git repository holding the project's current files (tracked and new, not ignored).

    End-to-end tests run DVC here, as a user would in a fresh clone, without
    touching the real workspace. The model and training are shrunk (TINY_*) so a
    full ``dvc repro`` takes seconds; download and tokenize keep their defaults.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    target = tmp_path / "project"
    for name in filter(None, listed):
        source = PROJECT_ROOT / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    import yaml

    params = yaml.safe_load((target / "params.yaml").read_text())
    params["model"].update(TINY_MODEL)
    params["train"].update(TINY_TRAIN)
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "copy"],
    ):
        subprocess.run(command, cwd=target, check=True)
    return target


@pytest.fixture(autouse=True)
def _drop_log_handlers() -> Iterator[None]:
    """Entry points called in-process attach log handlers to the root logger; detach them after."""
    yield
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_pipeline_handler", False):
            root.removeHandler(handler)
            handler.close()


@pytest.fixture
def tiny_params_file(tmp_path: Path) -> Path:
    """A params.yaml whose caches live in ``tmp_path`` and whose ``kjv`` is the first verses only."""
    import yaml

    from src.config import PARAMS_FILE
    from src.data.sources import _resolve_local_file

    kjv = _resolve_local_file("test", "package://bible/data/kjv.jsonl", PROJECT_ROOT)
    lines = kjv.read_text(encoding="utf-8").splitlines(keepends=True)[:KJV_LINES]
    (tmp_path / "kjv_small.jsonl").write_text("".join(lines), encoding="utf-8")
    params = yaml.safe_load(PARAMS_FILE.read_text())
    params["paths"] = {
        "cache_dir": str(tmp_path / "main_cache"),
        "model_cache": str(tmp_path / "model_cache"),
        "log_dir": str(tmp_path / "logs"),
        "model_dir": str(tmp_path / "model"),
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "metrics_file": str(tmp_path / "metrics.json"),
        "plots_dir": str(tmp_path / "plots"),
    }
    params["model"].update(TINY_MODEL)
    params["train"].update(TINY_TRAIN)
    params["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params["download"]["datasets"]["kjv"]["data_files"] = str(tmp_path / "kjv_small.jsonl")
    params["download"]["datasets"]["kjv"]["validation_fraction"] = 0.1
    params["tokenize"]["vocab_size"] = 600
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def tiny_params(tiny_params_file: Path):
    from src.config import load_params

    return load_params(tiny_params_file)


@pytest.fixture
def tiny_export(tiny_params) -> Path:
    """The download export of the small corpus."""
    from src.utils.download_datasets import download_all

    return download_all(tiny_params, tiny_params.paths.raw_dir().parent)["kjv"]
