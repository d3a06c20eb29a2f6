"""Shared fixtures: the one home of the suite's helpers and prepared data.

The suite never imports itself as a package named ``tests`` (a dependency ships
one into site-packages), so every helper is a fixture here.

Test tiers: ``@pytest.mark.slow`` marks what runs DVC, Ray, the notebook, a
training in a subprocess or a whole training; ``pytest -m "not slow"`` runs the rest.

Prepared data is made once per session and shared read-only:

* ``tiny_data``: a 3,000-verse KJV corpus, downloaded, exported and tokenized
  (trained BPE); ``tiny_export`` and ``token_dir`` are its two outputs.
* ``reproduced_project``: a copy of the project after one ``dvc repro`` (slow tests).

Tests never write into them: params files point every output (model,
checkpoints, metrics, plots, logs, MLflow store) into the test's ``tmp_path``,
and a test that changes data works on its own copy (``make_params(...,
data="copy")``, ``dvc_project``). An autouse check fails the test that writes
into a shared folder anyway.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from src.paths import PROJECT_ROOT
from src.utils.working_tree import commit_all, copy_working_tree

KJV_LINES = 3000
TINY_VOCAB = 600
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
#: A quick evaluation in the DVC tests' projects: every stage runs, on a few documents per task.
TINY_EVALUATE = {"limit": 20}

# --------------------------------------------------------------------------- process state


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep Hugging Face's own files out of the home folder and the project while testing."""
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf_home"))
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["DVC_NO_ANALYTICS"] = "1"


def drop_pipeline_log_handlers() -> None:
    """Detach the handlers ``setup_logging`` attached to the root logger."""
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_pipeline_handler", False):
            root.removeHandler(handler)
            handler.close()


@pytest.fixture(autouse=True)
def _isolate_process_state() -> Iterator[None]:
    """Entry points called in-process set environment defaults and attach log handlers: undo both."""
    environment = dict(os.environ)
    yield
    drop_pipeline_log_handlers()
    os.environ.clear()
    os.environ.update(environment)


# --------------------------------------------------------------------------- no server left behind

#: Every process this test session starts inherits this variable: how its leftovers are told apart
#: from another session's (or a user's) Ray cluster or MLflow server on the same machine.
SESSION_MARKER = "LMPIPE_TEST_SESSION"

#: Command-line pieces of the long-lived processes a test may start: Ray's cluster processes and
#: workers, and an MLflow tracking server (with its uvicorn or gunicorn workers).
SERVER_PROCESSES = ("raylet", "gcs_server", "ray::", "ray/_private", "ray/dashboard", "mlflow", "uvicorn")


def session_processes() -> dict[int, str]:
    """pid -> command line of the Ray and MLflow server processes this session started (live ones)."""
    marker = f"{SESSION_MARKER}={os.environ[SESSION_MARKER]}".encode()
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(piece in command for piece in SERVER_PROCESSES):
            found[int(proc.name)] = command.strip()
    return found


@pytest.fixture(scope="session")
def server_processes() -> Callable[[], dict[int, str]]:
    """``server_processes()``: pid -> command line of the live Ray and MLflow server processes this
    test session started (a Ray Train worker's reads ``ray::RayTrainWorker``)."""
    return session_processes


@pytest.fixture(scope="session", autouse=True)
def _session_marker() -> None:
    os.environ[SESSION_MARKER] = f"{os.getpid()}-{os.urandom(4).hex()}"


@pytest.fixture(autouse=True)
def _no_server_left_behind(_session_marker: None) -> Iterator[None]:
    """Fail the test that leaves a Ray or MLflow server process running (given 20 s to exit),
    and stop those processes so the next test starts clean."""
    import signal
    import time

    before = set(session_processes())
    yield
    deadline = time.monotonic() + 20
    while (left := {p: c for p, c in session_processes().items() if p not in before}) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        pytest.fail(f"this test left {len(left)} Ray or MLflow process(es): {list(left.values())[:3]}")


# --------------------------------------------------------------------------- shared read-only folders

_SHARED: dict[Path, dict[str, tuple[int, int, int]]] = {}


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """(size, mtime, inode) of everything under ``folder``: any write or replacement changes it."""
    found = {}
    for path in folder.rglob("*"):
        stat = path.lstat()
        found[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return found


def share_read_only(folder: Path) -> Path:
    """Register a session folder that tests may read but never change."""
    _SHARED[folder] = _snapshot(folder)
    return folder


@pytest.fixture(autouse=True)
def _shared_folders_stay_untouched() -> Iterator[None]:
    yield
    for folder, before in _SHARED.items():
        now = _snapshot(folder)
        if now != before:
            _SHARED[folder] = now  # report it once, against the test that did it
            changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
            pytest.fail(f"this test changed the shared read-only {folder}: {changed[:10]}; work on a copy")


# --------------------------------------------------------------------------- helpers
# Session-scoped fixtures that return a function, so module- and session-scoped fixtures can use them.


def tool_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the project's interpreter first on PATH (DVC stages and make call ``python``)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, **(extra or {})}


@pytest.fixture(scope="session")
def tool_env() -> Callable[..., dict[str, str]]:
    """``tool_env(extra=None)``: environment for subprocesses running ``python``, ``dvc`` or ``make``."""
    return tool_environment


def run_python(
    *args: str | Path, cwd: Path = PROJECT_ROOT, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the project's interpreter on ``args`` and capture its output."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=tool_environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def python_runner() -> Callable[..., subprocess.CompletedProcess]:
    """``python_runner(*args, cwd=PROJECT_ROOT, env=None)``: run a script as a user would."""
    return run_python


def run_dvc(
    project: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``dvc`` in ``project`` as a user would (``env``: extra variables); with ``check``, a
    failure shows DVC's output."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        env=tool_environment(env),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="session")
def dvc() -> Callable[..., subprocess.CompletedProcess]:
    """``dvc(project, *args, check=True, env=None)``: run DVC and return the finished process."""
    return run_dvc


@pytest.fixture(scope="session")
def train_command() -> Callable[[Path], list[str]]:
    """The command a user types to train with a params file: ``python src/train/train.py --params F``
    (logs beside the params file, not in the checkout's ``logs/``)."""

    def command(params: Path) -> list[str]:
        script = PROJECT_ROOT / "src" / "train" / "train.py"
        return [
            sys.executable,
            str(script),
            "--params",
            str(params),
            "--log-dir",
            str(params.parent / "logs"),
        ]

    return command


@pytest.fixture
def free_port() -> int:
    """A local TCP port that nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_curve(csv_file: Path, column: str) -> list[float]:
    with open(csv_file, newline="") as handle:
        return [float(row[column]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="session")
def curve() -> Callable[[Path, str], list[float]]:
    """``curve(csv_file, column)``: one column of a plots CSV (``plots/train_loss.csv``...) as floats."""
    return read_curve


@pytest.fixture(scope="session")
def mlflow_runs() -> Callable[..., list]:
    """``mlflow_runs(tracking_uri, experiment="lmpipe")``: the runs of an MLflow experiment, newest first."""

    def runs(uri: str, experiment: str = "lmpipe") -> list:
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        return client.search_runs([found.experiment_id]) if found else []

    return runs


@pytest.fixture(scope="session")
def metric_history() -> Callable[..., list[tuple[int, float]]]:
    """``metric_history(tracking_uri, run_id, key="train_loss")``: a run's (step, value) pairs, sorted."""

    def history(uri: str, run_id: str, key: str = "train_loss") -> list[tuple[int, float]]:
        from mlflow import MlflowClient

        return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))

    return history


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def folder_bytes() -> Callable[[Path], dict[str, bytes]]:
    """``folder_bytes(folder)``: every file under ``folder`` (relative name -> bytes), to compare outputs."""
    return files_of


class StaticServer:
    """A local HTTP server on 127.0.0.1 serving one folder and recording GET requests."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
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
    yield server
    server.close()


# --------------------------------------------------------------------------- the tiny corpus


@pytest.fixture(scope="session")
def two_local_datasets() -> Callable[[Path], dict]:
    """``two_local_datasets(folder)``: params data whose ``download.datasets`` are two small text
    files written into ``folder`` (``first`` and ``second``; ``tokenize.datasets`` is ``[first]``)."""

    def make(folder: Path) -> dict:
        from src.config import PARAMS_FILE

        data = yaml.safe_load(PARAMS_FILE.read_text())
        data["download"]["datasets"] = {}
        for name in ("first", "second"):
            (folder / f"{name}.txt").write_text("".join(f"{name} line {i}\n" for i in range(20)))
            data["download"]["datasets"][name] = {"path": "text", "data_files": str(folder / f"{name}.txt")}
        data["tokenize"]["datasets"] = ["first"]
        return data

    return make


def _tiny_params(folder: Path, cache_dir: Path, corpus: Path) -> dict:
    """params.yaml with the tiny model and corpus; data in ``cache_dir``, every output in ``folder``."""
    from src.config import PARAMS_FILE

    params = yaml.safe_load(PARAMS_FILE.read_text())
    params["paths"] = {
        "cache_dir": str(cache_dir),
        "model_cache": str(folder / "model_cache"),
        "log_dir": str(folder / "logs"),
        "model_dir": str(folder / "model"),
        "checkpoint_dir": str(folder / "checkpoints"),
        "metrics_file": str(folder / "metrics.json"),
        "plots_dir": str(folder / "plots"),
        "eval_dir": str(folder / "eval"),
        "eval_metrics_file": str(folder / "eval_metrics.json"),
    }
    params["model"].update(TINY_MODEL)
    params["train"].update(TINY_TRAIN)
    params["mlflow"]["tracking_uri"] = f"sqlite:///{folder / 'mlflow.db'}"
    params["evaluate"]["include_path"] = str(PROJECT_ROOT / "eval_tasks")  # the project's task files
    kjv = params["download"]["datasets"]["kjv"]
    kjv["data_files"] = str(corpus)
    kjv["validation_fraction"] = 0.1
    params["tokenize"]["vocab_size"] = TINY_VOCAB
    return params


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The first 3,000 KJV verses, downloaded, exported and tokenized once for the whole session.

    Read-only: ``corpus`` (the source file), ``cache_dir`` (``raw/kjv`` export,
    ``tokenized/bpe/kjv`` tokens, the Hugging Face cache), ``export``, ``tokenizer`` (the tokenizer
    stage's folder) and ``tokens``.
    """
    from src.config import load_params
    from src.data.download import download_all
    from src.data.sources import _package_file
    from src.data.tokenize_stages import make_tokenizer, tokenize_from_params

    folder = tmp_path_factory.mktemp("tiny_data")
    kjv = _package_file("test", "package://bible/data/kjv.jsonl")
    lines = kjv.read_text(encoding="utf-8").splitlines(keepends=True)[:KJV_LINES]
    corpus = folder / "kjv_small.jsonl"
    corpus.write_text("".join(lines), encoding="utf-8")
    cache_dir = folder / "main_cache"
    scratch = tmp_path_factory.mktemp("tiny_data_outputs")  # nothing is written there; kept apart anyway
    params_file = scratch / "params.yaml"
    params_file.write_text(yaml.safe_dump(_tiny_params(scratch, cache_dir, corpus), sort_keys=False))
    params = load_params(params_file)
    export = download_all(params)["kjv"]
    tokenizer = make_tokenizer(params)
    tokens = tokenize_from_params(params, "kjv")
    share_read_only(folder)
    return SimpleNamespace(
        corpus=corpus, cache_dir=cache_dir, export=export, tokenizer=tokenizer, tokens=tokens
    )


@pytest.fixture
def tiny_export(tiny_data: SimpleNamespace) -> Path:
    """The shared export of the tiny corpus (``raw/kjv``): read it, never write it."""
    return tiny_data.export


@pytest.fixture
def token_dir(tiny_data: SimpleNamespace) -> Path:
    """The shared tokens of the tiny corpus (``tokenized/bpe/kjv``): read them, never write them."""
    return tiny_data.tokens


@pytest.fixture(scope="session")
def make_params(tiny_data: SimpleNamespace) -> Callable[..., Path]:
    """``make_params(folder, *, data="shared", ray=None, model=None, mlflow=None, **train)``.

    Writes ``folder/params.yaml``: the tiny params with every output and the
    MLflow store in ``folder``. ``data`` says where the data comes from:
    ``"shared"`` reads the session's export and tokens (read-only); ``"copy"``
    copies both into ``folder/main_cache``; ``"export"`` copies only the export;
    ``"empty"`` starts from an empty cache.
    """

    def make(
        folder: Path,
        *,
        data: str = "shared",
        ray: dict | None = None,
        model: dict | None = None,
        mlflow: dict | None = None,
        **train: object,
    ) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        cache_dir = tiny_data.cache_dir if data == "shared" else folder / "main_cache"
        if data in ("copy", "export"):
            shutil.copytree(tiny_data.export, cache_dir / "raw" / "kjv")
        if data == "copy":
            shutil.copytree(tiny_data.tokenizer, cache_dir / "tokenized" / "bpe" / "tokenizer")
            shutil.copytree(tiny_data.tokens, cache_dir / "tokenized" / "bpe" / "kjv")
        elif data not in ("shared", "export", "empty"):
            raise ValueError(f"data: {data!r}")
        params = _tiny_params(folder, cache_dir, tiny_data.corpus)
        params["train"].update(train)
        params["model"].update(model or {})
        params["ray"].update(ray or {})
        params["mlflow"].update(mlflow or {})
        path = folder / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return path

    return make


@pytest.fixture
def tiny_params_file(make_params: Callable[..., Path], tmp_path: Path) -> Path:
    """The tiny params: shared prepared data, every output and the MLflow store in ``tmp_path``."""
    return make_params(tmp_path)


@pytest.fixture
def tiny_params(tiny_params_file: Path):
    from src.config import load_params

    return load_params(tiny_params_file)


# --------------------------------------------------------------------------- pretrained tokenizers


def write_gpt2_style_tokenizer(folder: Path, texts: list[str], vocab_size: int = 400) -> Path:
    """A tokenizer folder in GPT-2's exact configuration, small: byte-level BPE in ``vocab.json`` +
    ``merges.txt``, ``<|endoftext|>`` as the last id and as UNK, BOS and EOS (the GPT-2 class defaults),
    ``add_prefix_space=False``; ``tokenizer_config.json`` and ``config.json`` as GPT-2's repository
    has them."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    folder.mkdir(parents=True)
    tokenizer.model.save(str(folder))  # vocab.json and merges.txt ("#version: 0.2" first, as GPT-2's)
    vocab = json.loads((folder / "vocab.json").read_text())
    eos = vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    config = {"model_type": "gpt2", "vocab_size": len(vocab), "bos_token_id": eos, "eos_token_id": eos}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def write_sentencepiece_style_tokenizer(folder: Path, texts: list[str], *, legacy: bool) -> Path:
    """A Llama/Mistral-style fast tokenizer: BPE with byte fallback, ``<unk>`` ``<s>`` ``</s>`` as ids
    0-2, a ``TemplateProcessing`` post-processor that adds ``<s>``, saved as a ``LlamaTokenizer``.
    ``legacy`` spells the word-start marker as Llama 2 does (a normalizer that prepends it to every
    text); otherwise as current conversions do (a Metaspace pre-tokenizer that prepends it to the first
    piece of a text only)."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if legacy:
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first", split=False
        )
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(str(folder))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="LlamaTokenizer", add_bos_token=True, add_eos_token=False, legacy=legacy)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def write_special_token_variant(folder: Path, texts: list[str], *, eos: bool) -> Path:
    """A byte-level BPE without UNK and BOS (``eos``: with ``<|endoftext|>`` as EOS), or a BERT-style
    one without EOS that wraps a text in ``[CLS] ... [SEP]``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>"] if eos else ["[UNK]", "[CLS]", "[SEP]", "[PAD]"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    if eos:
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tokenizer,
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            pad_token="[PAD]",
        )
    fast.save_pretrained(str(folder))
    return folder


#: The kinds of pretrained tokenizer the pipeline must take, by folder name.
TOKENIZER_KINDS = ("gpt2", "llama", "llama2", "no-unk", "no-eos")


@pytest.fixture(scope="session")
def pretrained_tokenizers(tiny_data: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one tokenizer folder per kind in ``TOKENIZER_KINDS``, trained on the tiny
    corpus (read-only; load them with ``AutoTokenizer.from_pretrained``)."""
    from src.data.encoding import iter_documents

    texts = list(iter_documents(tiny_data.export / "train.jsonl"))
    folder = tmp_path_factory.mktemp("tokenizers")
    write_gpt2_style_tokenizer(folder / "gpt2", texts)
    write_sentencepiece_style_tokenizer(folder / "llama", texts, legacy=False)
    write_sentencepiece_style_tokenizer(folder / "llama2", texts, legacy=True)
    write_special_token_variant(folder / "no-unk", texts, eos=True)
    write_special_token_variant(folder / "no-eos", texts, eos=False)
    return share_read_only(folder)


@pytest.fixture(scope="session")
def gpt2_style_tokenizer() -> Callable[[Path, list[str]], Path]:
    """``gpt2_style_tokenizer(folder, texts)``: write a GPT-2-configured tokenizer folder (see above)."""
    return write_gpt2_style_tokenizer


# --------------------------------------------------------------------------- the project under DVC


def copy_project(target: Path, settings: dict[str, object] | None = None) -> Path:
    """A fresh git repository holding the project's current files (tracked and new, not ignored).

    The model and training are shrunk (TINY_*) so a training takes seconds;
    download and tokenize keep their defaults, so their outputs can be compared
    with the committed ``dvc.lock``. ``settings`` are set on top before the first commit, as
    ``dvc exp run -S`` would: ``{"train.max_steps": 5, "tokenize.vocab_size": 600}``.
    """
    copy_working_tree(target)
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["model"].update(TINY_MODEL)
    params["train"].update(TINY_TRAIN)
    params["evaluate"].update(TINY_EVALUATE)
    for key, value in (settings or {}).items():
        *sections, name = key.split(".")
        node = params
        for section in sections:
            node = node[section]
        node[name] = value
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_all(target, "copy")
    return target


@pytest.fixture(scope="session")
def project_copy() -> Callable[..., Path]:
    """``project_copy(target, settings=None)``: a fresh git repository of the project, tiny training
    (see :func:`copy_project`), nothing produced yet."""
    return copy_project


#: The MLflow store a run leaves at the project root; its experiment records its absolute location.
_STORE = ("mlflow.db", "mlflow.db.lock", "mlruns")


@pytest.fixture(scope="session")
def reproduced_project(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A copy of the project after one full ``dvc repro`` (``path``, and ``first_run``: that process).

    Read-only and shared by the DVC tests, which each work on a copy
    (``dvc_project``). Its MLflow store is removed: the store records its own
    absolute location, so a copy would log into this folder.
    """
    path = copy_project(tmp_path_factory.mktemp("reproduced") / "project")
    first_run = run_dvc(path, "repro")
    for name in _STORE:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    share_read_only(path)
    return SimpleNamespace(path=path, first_run=first_run)


@pytest.fixture(scope="session")
def trained_project(
    make_params, tiny_data: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny project after download, tokenize and one finished training, read-only.

    ``params.yaml`` points every path into the folder (absolute paths, the corpus copied in as
    ``corpus.jsonl``); it holds the export, the tokens, the model, metrics, plots and the
    checkpoints of its configuration, but no MLflow store, logs or scratch files. Tests that
    break it work on a copy whose params point into the copy (``tests/test_bad_inputs.py``).
    """
    from src.config import load_params
    from src.train.fit import fit

    root = tmp_path_factory.mktemp("trained") / "project"
    params_file = make_params(root, data="copy")
    params = yaml.safe_load(params_file.read_text())
    shutil.copy(tiny_data.corpus, root / "corpus.jsonl")
    params["download"]["datasets"]["kjv"]["data_files"] = str(root / "corpus.jsonl")
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    fit(load_params(params_file), root=root)
    for name in (*_STORE, "tmp", "logs"):
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    return share_read_only(root)


@pytest.fixture
def trained_copy(trained_project: Path, tmp_path: Path) -> Path:
    """A private copy of the trained project, its params pointing into the copy."""
    root = Path(shutil.copytree(trained_project, tmp_path / "project"))
    params = root / "params.yaml"
    params.write_text(params.read_text().replace(str(trained_project), str(root)))
    return root


@pytest.fixture
def dvc_project(reproduced_project: SimpleNamespace, tmp_path: Path) -> Path:
    """A private copy of the reproduced project (git, DVC cache, outputs), without an MLflow store."""
    return Path(shutil.copytree(reproduced_project.path, tmp_path / "project", symlinks=True))


# --------------------------------------------------------------------------- a disk that fills


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str, int], Path]]:
    """``small_disk(name, kib)``: a folder ``tmp_path/name`` on a tmpfs of that size, as a disk that
    fills. Mounting needs root (as on CI); elsewhere the test is skipped with a line saying so."""
    mounted: list[Path] = []

    def make(name: str, kib: int) -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# --------------------------------------------------------------------------- code shipped with a folder


def write_custom_code_tokenizer(folder: Path, texts: list[str], marker: Path) -> SimpleNamespace:
    """A tokenizer folder that ships its own Python class, as custom-code Hub repositories do: the
    Llama-style tokenizer above (``tokenizer.json`` + ``tokenizer_config.json``), its
    ``tokenizer_class`` a class defined in ``tokenization_marker.py`` beside them (a
    ``PreTrainedTokenizerFast`` subclass) and ``auto_map`` pointing ``AutoTokenizer`` at it. Importing
    that module writes ``marker``: the file exists exactly when the folder's code ran.

    Returns ``folder``, ``code`` (the module's source) and ``signature`` (a string unique to it, to
    look for in copies of the code)."""
    import json

    write_sentencepiece_style_tokenizer(folder, texts, legacy=False)
    signature = f"custom-code-{os.urandom(8).hex()}"
    code = (
        '"""A tokenizer class shipped with its folder."""\n\n'
        "from pathlib import Path\n\n"
        "from transformers import PreTrainedTokenizerFast\n\n"
        f"SIGNATURE = {signature!r}\n"
        f"Path({str(marker)!r}).write_text(SIGNATURE)\n\n\n"
        "class MarkerTokenizerFast(PreTrainedTokenizerFast):\n"
        '    """The folder\'s own tokenizer class."""\n'
    )
    (folder / "tokenization_marker.py").write_text(code)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(
        tokenizer_class="MarkerTokenizerFast",
        auto_map={"AutoTokenizer": [None, "tokenization_marker.MarkerTokenizerFast"]},
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return SimpleNamespace(folder=folder, code=code, signature=signature)


@pytest.fixture(scope="session")
def custom_code_tokenizer() -> Callable[[Path, list[str], Path], SimpleNamespace]:
    """``custom_code_tokenizer(folder, texts, marker)``: write a tokenizer folder whose ``auto_map``
    names a class in a ``.py`` beside it, whose import writes ``marker`` (see above)."""
    return write_custom_code_tokenizer
