"""Bad input, as a user makes it: one line naming the key or file, a non-zero exit, nothing lost.

One table of cases. Each breaks one thing in a copy of a tiny project that has been through
download, tokenize and a finished training, runs one command, and checks the contract every
error path keeps (README, *What is protected*):

* the exit code is that of a user error (2; ``dvc repro`` passes the stage's failure on as 1);
* the output has exactly one ``error:`` line, and it names the key or file at fault;
* no traceback anywhere in the output;
* every earlier output (export, tokens, model, metrics, plots, checkpoints) is byte for byte
  what it was after the break, so the last configuration's checkpoints are still there;
* a training refused at start-up opened no MLflow run (the store is not even created): the
  checks come before any expensive work.

Most cases run the entry point in-process, as its own module (``runpy``: the stage's
``__main__`` through :func:`src.cli.run_cli`, which turns errors into the line and the exit
code); a representative subset runs as a user types it, in a subprocess (``python -m
stages.<name>`` in a copy of the code, ``python src/train/train.py``), checked on the real
stderr and exit code; the ``dvc repro`` cases (slow) run in a copy of the reproduced project.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets  # noqa: F401  (imported before any case: see below)
import pytest
import transformers  # noqa: F401
import yaml

from src.paths import PROJECT_ROOT

# datasets and transformers bind their log handler to sys.stderr when first imported. Were that
# inside an in-process case, the handler would keep that case's capture, closed after it, and a
# later case's log line would fail with a logging traceback ("Traceback" in its output).

# --------------------------------------------------------------------------- the project a case breaks


class Project:
    """A project folder and its params (a case edits ``params``; :meth:`save` writes them back)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.params_file = root / "params.yaml"
        self.params = yaml.safe_load(self.params_file.read_text())
        self.paths = dict(self.params["paths"])
        """Where the outputs were before the case broke anything (and so where they must stay)."""

    def path(self, key: str) -> Path:
        """Where ``paths.<key>`` pointed (relative paths are relative to the project root)."""
        value = Path(self.paths[key])
        return value if value.is_absolute() else self.root / value

    @property
    def export(self) -> Path:
        return self.path("cache_dir") / "raw" / "kjv"

    @property
    def tokens(self) -> Path:
        return self.path("cache_dir") / "tokenized" / "bpe" / "kjv"

    @property
    def tokenizer(self) -> Path:
        """The tokenizer stage's folder."""
        return self.path("cache_dir") / "tokenized" / "bpe" / "tokenizer"

    @property
    def run_folder(self) -> Path:
        """The checkpoint folder of the trained configuration."""
        (folder,) = self.path("checkpoint_dir").glob("run-*")
        return folder

    def configuration(self) -> tuple[Path, object]:
        """The checkpoint folder of the configuration the case's params describe, and its inputs.

        The copy's paths differ from the trained project's, and paths are settings, so this is
        another configuration than the trained one: a file planted for it goes here.
        """
        from src.config import load_params
        from src.train.checkpoints import configuration_folder
        from src.train.run_inputs import prepare_run_inputs

        self.save()
        inputs = prepare_run_inputs(load_params(self.params_file), PROJECT_ROOT)
        folder = configuration_folder(self.path("checkpoint_dir"), inputs.fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        return folder, inputs

    @property
    def dataset(self) -> dict:
        return self.params["download"]["datasets"]["kjv"]

    def corpus(self, text: str | bytes, name: str = "corpus.jsonl") -> Path:
        """Write a source file into the project and make it the dataset's only data file."""
        path = self.root / name
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        self.dataset["data_files"] = str(path)
        return path

    def under_a_file(self, name: str) -> str:
        """A path whose parent is a regular file: no one can create it, the superuser included."""
        blocker = self.root / "a_file"
        blocker.write_text("not a folder\n")
        return str(blocker / name)

    def save(self) -> None:
        self.params_file.write_text(yaml.safe_dump(self.params, sort_keys=False))

    def outputs(self) -> list[Path]:
        """Every output of the three stages, and the MLflow store if there is one."""
        return [
            self.export,
            self.tokens,
            self.path("model_dir"),
            self.path("metrics_file"),
            self.path("plots_dir"),
            self.path("checkpoint_dir"),
            self.root / "mlflow.db",
        ]


def snapshot(project: Project) -> dict[str, object]:
    """The bytes of every output (a folder: each file's), as the case left them."""

    def contents(path: Path) -> object:
        if path.is_dir():
            return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
        return path.read_bytes() if path.is_file() else None

    return {str(path): contents(path) for path in project.outputs()}


# --------------------------------------------------------------------------- ways to break it


def edit(section: str, **values: object) -> Callable[[Project], None]:
    """Set keys of a params section (``"train"``, ``"download.datasets.kjv"``)."""

    def apply(project: Project) -> None:
        target = project.params
        for part in section.split("."):
            target = target[part]
        target.update(values)

    return apply


def raw_params(text: str | bytes) -> Callable[[Project], None]:
    """Replace ``params.yaml`` with exactly these bytes."""

    def apply(project: Project) -> None:
        project.params = None
        data = text.encode() if isinstance(text, str) else text
        project.params_file.write_bytes(data)

    return apply


def with_params_text(change: Callable[[str], str]) -> Callable[[Project], None]:
    """Edit ``params.yaml`` as text (for what a YAML dump cannot write: duplicate keys...)."""

    def apply(project: Project) -> None:
        project.save()
        text = change(project.params_file.read_text())
        project.params = None
        project.params_file.write_text(text)

    return apply


def latin1_corpus(project: Project) -> None:
    lines = [json.dumps({"text": f"verse {i}"}).encode() + b"\n" for i in range(40)]
    lines[2] = '{"text": "café"}\n'.encode("latin-1")
    project.corpus(b"".join(lines))


def latin1_text(project: Project) -> None:
    project.dataset["path"] = "text"
    project.corpus(b"first line\nsecond line\nna\xefve third\n", "corpus.txt")


def unreachable_url(project: Project) -> None:
    with socket.socket() as sock:  # a local port nothing listens on: refused at once, offline too
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    project.dataset["data_files"] = f"http://127.0.0.1:{port}/corpus.jsonl"


def one_document(project: Project) -> None:
    project.corpus(json.dumps({"text": "In the beginning God created the heaven and the earth."}) + "\n")


def blank_validation(project: Project) -> None:
    project.dataset["path"] = "text"
    (project.root / "train.txt").write_text("a line\nanother line\n")
    (project.root / "valid.txt").write_text("\n   \n\n")
    project.dataset["data_files"] = {
        "train": str(project.root / "train.txt"),
        "validation": str(project.root / "valid.txt"),
    }


def notes_with_validation(project: Project, data_dir: str, validation: str) -> None:
    """A second dataset, ``download.local.notes``, whose validation split is its own file."""
    notes = project.root / "notes"
    notes.mkdir()
    (notes / "train.txt").write_text(
        "".join(f"line {i} of the notes, enough to train on\n" for i in range(200))
    )
    (notes / "valid.txt").write_text(validation)
    files = {"train": "train.txt", "validation": "valid.txt"}
    project.params["download"]["local"] = {
        "notes": {"path": "text", "data_dir": data_dir, "data_files": files}
    }
    project.params["tokenize"]["datasets"] = ["kjv", "notes"]


def one_byte_validation_file(project: Project) -> None:
    """``notes`` downloaded and tokenized with a 1-byte validation file: fewer tokens than a window."""
    from src.config import load_params
    from src.data.download import download_all
    from src.data.tokenize_stages import tokenize_from_params

    notes_with_validation(project, str(project.root / "notes"), "x")
    project.save()
    params = load_params(project.params_file)
    download_all(params, names=["notes"])
    tokenize_from_params(params, "notes")


def dvc_one_byte_validation_file(project: Project) -> None:
    """The same for ``dvc repro`` to download and tokenize (the folder relative to the project)."""
    notes_with_validation(project, "notes", "x")


def export_without_train(project: Project) -> None:
    """An export whose manifest names a ``test`` split only (its file intact)."""
    manifest = project.export / "manifest.json"
    data = json.loads(manifest.read_text())
    data["splits"] = {"test": data["splits"]["train"]}
    manifest.write_text(json.dumps(data))


def located(project: Project, relative: str) -> Path:
    """``tokens/...``, ``export/...`` or ``tokenizer/...``: a path in that output of the project."""
    where, _, name = relative.partition("/")
    return {"tokens": project.tokens, "export": project.export, "tokenizer": project.tokenizer}[where] / name


def damage(relative: str, change: Callable[[bytes], bytes]) -> Callable[[Project], None]:
    """Rewrite one file of the tokens, the export or the tokenizer stage's folder (see ``located``)."""

    def apply(project: Project) -> None:
        path = located(project, relative)
        path.write_bytes(change(path.read_bytes()))

    return apply


def remove(relative: str) -> Callable[[Project], None]:
    """Delete a file of an output (see ``located``), or (``tokens/``, ``export/``...) the whole folder."""

    def apply(project: Project) -> None:
        path = located(project, relative)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    return apply


def other_format(change: dict) -> Callable[[bytes], bytes]:
    return lambda data: json.dumps({**json.loads(data), **change}).encode()


def other_tokenizer(project: Project) -> None:
    """The tokenizer beside the tokens loses its last merge: it loads, but makes other ids."""
    path = project.tokens / "tokenizer" / "tokenizer.json"
    data = json.loads(path.read_text())
    data["model"]["merges"] = data["model"]["merges"][:-1]
    path.write_text(json.dumps(data))


def missing_tokenizer(project: Project) -> None:
    project.params["tokenize"]["tokenizer"] = "./my_tokenizer"


def tokenizer_without_files(project: Project) -> None:
    (project.root / "my_tokenizer").mkdir()
    (project.root / "my_tokenizer" / "notes.txt").write_text("the tokenizer goes here\n")
    project.params["tokenize"]["tokenizer"] = "my_tokenizer"


def tokens_folder_is_a_file(project: Project) -> None:
    tokenized = project.tokens.parent
    shutil.rmtree(tokenized)
    tokenized.write_text("not a folder\n")


def planted_pickle(project: Project) -> None:
    """A checkpoint whose unpickling would run a command (it would create ``ran``)."""
    import torch

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {project.root / 'ran'}",))

    folder, _ = project.configuration()
    torch.save({"step": 999, "model": Planted()}, folder / "step-000000999.ckpt")
    forge_digest(folder / "step-000000999.ckpt")  # else it is skipped unread, as any unverified file


def foreign_checkpoint(project: Project) -> None:
    """A checkpoint of a wider model (another configuration), copied into this one's folder."""
    import torch

    from src.train.checkpoints import run_fingerprint

    state = torch.load(project.run_folder / "step-000000020.ckpt", weights_only=True)
    folder, inputs = project.configuration()
    state["settings"] = {**inputs.shaping, "model.n_embd": "32"}
    state["fingerprint"] = run_fingerprint(state["settings"], inputs.inputs)
    state["model"] = {name: torch.zeros(*(2 * n for n in t.shape)) for name, t in state["model"].items()}
    torch.save(state, folder / "step-000000030.ckpt")
    forge_digest(folder / "step-000000030.ckpt")


def forge_digest(checkpoint: Path) -> None:
    """The digest the pipeline writes beside a checkpoint, as someone who planted one would forge it."""
    from src.train.checkpoints import digest_path
    from src.utils.files import sha256_file

    digest_path(checkpoint).write_text(f"{sha256_file(checkpoint)}  {checkpoint.name}\n")


def damaged_store(project: Project) -> None:
    (project.root / "mlflow.db").write_bytes(b"these bytes are no SQLite database\n" * 100)


def read_only_store(project: Project) -> None:
    from src.train.tracking import RunTracker

    RunTracker(f"sqlite:///{project.root / 'mlflow.db'}", "lmpipe")  # a valid, empty store
    (project.root / "mlflow.db").chmod(0o444)
    project.root.chmod(0o555)  # SQLite writes a journal beside the file


def read_only_parent(project: Project) -> None:
    folder = project.root / "outputs"
    folder.mkdir()
    folder.chmod(0o555)
    project.params["paths"]["model_dir"] = str(folder / "model")


def metrics_file_is_a_folder(project: Project) -> None:
    path = project.path("metrics_file")
    path.unlink()
    (path / "old").mkdir(parents=True)


def plots_dir_is_a_file(project: Project) -> None:
    path = project.path("plots_dir")
    shutil.rmtree(path)
    path.write_text("step,train_loss\n")


def store_under_a_file(project: Project) -> None:
    project.params["mlflow"]["tracking_uri"] = f"sqlite:///{project.under_a_file('mlflow.db')}"


def unreachable_server(userinfo: str) -> Callable[[Project], None]:
    """``mlflow.tracking_uri`` of a server that refuses at once, with credentials in its userinfo."""

    def apply(project: Project) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # the process's environment is restored after
        project.params["mlflow"]["tracking_uri"] = f"http://{userinfo}@127.0.0.1:{port}"

    return apply


def nothing(project: Project) -> None:
    """The break is in the command itself (its arguments)."""


def corpus_is_an_empty_folder(project: Project) -> None:
    (project.root / "corpus").mkdir()
    project.dataset["data_files"] = str(project.root / "corpus")


def under_a_file(key: str) -> Callable[[Project], None]:
    def apply(project: Project) -> None:
        project.params["paths"][key] = project.under_a_file(key)

    return apply


def outside(key: str, relative: bool = False) -> Callable[[Project], None]:
    """``paths.<key>`` on "another disk": a folder beside the project, not in it (``../other_disk``)."""

    def apply(project: Project) -> None:
        other_disk = project.root.parent / "other_disk"
        project.params["paths"][key] = "../other_disk" if relative else str(other_disk / key)

    return apply


#: The text of a file outside the project: a link in a corpus folder must not carry it in.
OUTSIDE_MARKER = "marker-7d2e41-outside-the-data-dir"


def link_out_of_data_dir(to: str) -> Callable[[Project], None]:
    """A ``download.local`` folder holding a link to a file (``to="file"``) or a folder (``"dir"``)
    outside the project, beside a file and a link that stay inside."""

    def apply(project: Project) -> None:
        outside = project.root.parent / "outside"
        (outside / "books").mkdir(parents=True)
        (outside / "passwd").write_text(f"root:x:0:0:{OUTSIDE_MARKER}:/root:/bin/sh\n")
        (outside / "books" / "more.txt").write_text(f"{OUTSIDE_MARKER}\n")
        notes = project.root / "notes"
        notes.mkdir()
        (notes / "a.txt").write_text("a line\nanother line\n")
        (notes / "b.txt").symlink_to("a.txt")
        link = notes / ("passwd.txt" if to == "file" else "books")
        link.symlink_to(outside / "passwd" if to == "file" else outside / "books")
        project.params["download"]["local"] = {"notes": {"path": "text", "data_dir": str(notes)}}

    return apply


def a_file(project: Project) -> None:
    project.under_a_file("x")


def add_section(name: str) -> Callable[[Project], None]:
    return lambda project: project.params.update({name: {"every": 5}})


def params_folder(project: Project) -> None:
    (project.root / "p" / "params.yaml").mkdir(parents=True)


duplicate_lr = with_params_text(lambda text: text.replace("  lr: ", "  lr: 0.1\n  lr: ", 1))


def cut_short(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def zero_first_half(data: bytes) -> bytes:
    return bytes(len(data) // 2) + data[len(data) // 2 :]  # the same size


format_csv = other_format({"format": "csv"})
format_blocks = other_format({"layout": "blocks of 128"})

KJV = "download.datasets.kjv"
EXPORT_MANIFEST, TOKEN_MANIFEST = "export/manifest.json", "tokens/manifest.json"
CACHED = ("cached copy could not be read",)
NO_GPU, PERMISSIONS = "no GPU", "permissions"
EXPORT_VALIDATION, TRAIN_BIN, TOKENIZER_JSON = (
    "export/validation.jsonl",
    "tokens/train.bin",
    "tokens/tokenizer/tokenizer.json",
)
AT, HIDDEN_USERINFO = ("u5er", "pa@", "ss9"), "cannot reach http://***@127.0.0.1:"  # no piece of it shows
OUTSIDE_THE_PROJECT = "paths.model_dir: '../other_disk' is outside the project ("


def on_another_disk(key: str) -> str:
    """What the line says of ``outside(key)``: ``paths.<key>: '<tmp>/other_disk/<key>' is outside...``."""
    return f"/other_disk/{key}' is outside the project ("


NOTES, MARKER = ("notes",), (f"bytes:{OUTSIDE_MARKER}",)
LINKED_FILE = "/notes/passwd.txt is a link to the file "  # after download.local.notes.data_dir: <root>
LINKED_FOLDER = "/notes/books is a link to the folder "
HOLD_OUT_MORE = (
    "window; lower train.max_length, or hold out more text (download.datasets.kjv.validation_fraction)"
)
ADD_TEXT = "download.local.notes.data_files.validation: 'valid.txt' in data_dir '"  # then <root>/notes'
DVC_ADD_TEXT = "notes.data_files.validation: 'valid.txt' in data_dir 'notes' holds "
FRACTION = ("validation_fraction",)  # the split is the file's: no fraction of anything is held out
LOGS_UNDER_A_FILE = ("--log-dir", "{root}/a_file/logs")
PARAMS_FOLDER, MISSING_PARAMS = ("--params", "{root}/p/params.yaml"), ("--params", "{root}/nope.yaml")


ray_gpu = edit("ray", use_ray=True, use_gpu=True)
SMALL_VOCAB = {"vocab_size": 10, "hidden_size": 12}  # accepted once, then an IndexError at step 0


def model_config(settings: dict) -> Callable[[Project], None]:
    return edit("model", config=settings)


def ray_workers(count: int) -> Callable[[Project], None]:
    return edit("ray", use_ray=True, num_workers=count)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    command: str
    """``download``, ``tokenize``, ``train``, ``check_params`` (the DVC stages), ``train.py`` or
    ``dvc repro``."""
    breaks: Callable[[Project], None]
    expect: str
    """A fragment of the ``error:`` line: the key or the file, and what is wrong."""
    subprocess: bool = False
    """Run as a user types it (else in-process, through the same entry code)."""
    needs: str = ""
    """``permissions``: the case only means something where a read-only folder stops writes;
    ``no GPU``: only on a machine without one."""
    args: tuple[str, ...] = ()
    """Extra arguments for the command (train.py and the download stage)."""
    absent: tuple[str, ...] = ()
    """Text the output must not contain, or (``file:<name>``) a file the run must not create, or
    (``bytes:<text>``) text no file under the project may hold afterwards."""


D, K, T, R, P, V = "download", "tokenizer", "tokenize", "train", "train.py", "dvc repro"
C = "check_params"

# fmt: off
CASES = [
    # -- download: the corpus and its settings
    Case("empty-dataset-file", D, lambda p: p.corpus(""), "corpus.jsonl' is empty; give a file with", True),
    Case("non-utf8-json-file", D, latin1_corpus, "corpus.jsonl line 3 is not valid utf-8 (byte 0xe9)"),
    Case("non-utf8-text-file", D, latin1_text, "corpus.txt line 3 is not valid utf-8 (byte 0xef)"),
    Case(
        "unknown-encoding",
        D,
        edit(KJV, options={"encoding": "utf-9"}),
        "kjv.options.encoding: unknown text encoding",
    ),
    Case("unreachable-url", D, unreachable_url, "kjv.data_files: cannot fetch http://", absent=CACHED),
    Case("no-validation-rows", D, one_document, "kjv.validation_fraction: 0.1 of the 1 training rows"),
    Case("blank-validation-file", D, blank_validation, "split 'validation' has no document"),
    Case("missing-corpus", D, edit(KJV, data_files="x.jsonl"), "kjv.data_files: file 'x.jsonl' not found"),
    Case("empty-folder-as-corpus", D, corpus_is_an_empty_folder, "/corpus' matches no file"),
    Case("link-to-a-file-outside", D, link_out_of_data_dir("file"), LINKED_FILE, args=NOTES, absent=MARKER),
    Case("link-to-a-dir-outside", D, link_out_of_data_dir("dir"), LINKED_FOLDER, args=NOTES, absent=MARKER),
    Case("wrong-text-column", D, edit(KJV, text_column="body"), "split 'train' has no column 'body'"),
    Case("unknown-key-in-dataset", D, edit(KJV, textcolumn="text"), "datasets.kjv.textcolumn: unknown key"),
    Case("wrong-type-fraction", D, edit(KJV, validation_fraction="x"), "kjv.validation_fraction: expected"),
    Case("out-of-range-fraction", D, edit(KJV, validation_fraction=1.5), "in (0, 1), got 1.5"),
    Case("unknown-key-download", D, edit("download", timeout=3), "download.timeout: unknown key"),
    Case("unknown-key-paths", D, edit("paths", data_dir="data"), "paths.data_dir: unknown key"),
    Case("out-of-range-hub-timeout", D, edit("download", hub_timeout_s=0), "download.hub_timeout_s: "),
    Case("unknown-dataset-argument", D, nothing, "datasets.wiki: no such dataset", args=("wiki",)),
    Case("cache-dir-under-a-file", D, under_a_file("cache_dir"), "paths.cache_dir: cannot", absent=CACHED),
    Case("log-dir-under-a-file", D, under_a_file("log_dir"), "paths.log_dir: cannot write", True),
    Case("cache-dir-outside-the-project", D, outside("cache_dir"), on_another_disk("cache_dir")),
    # -- tokenize: the export it reads, the tokenizer, its settings
    Case("missing-tokenizer-folder", K, missing_tokenizer, "folder my_tokenizer does not exist", True),
    Case("tokenizer-folder-without-files", K, tokenizer_without_files, "my_tokenizer holds nothing", True),
    Case("bpe-without-its-export", K, remove("export/"), "raw/kjv: no export here; run `dvc repro download`"),
    Case("tokenizer-not-made", T, remove("tokenizer/"), "made_by.json: not found; run `dvc repro tokenizer`"),
    Case("cut-tokenizer-record", T, damage("tokenizer/made_by.json", cut_short), "made_by.json: not valid"),
    Case("absolute-tokenizer-path", T, edit("tokenize", tokenizer="/opt/t"), "tokenize.tokenizer: expected"),
    Case("missing-export", T, remove("export/"), "raw/kjv: no export here; run `dvc repro download`"),
    Case("half-written-export", T, remove("export/train.jsonl"), "raw/kjv/train.jsonl: missing; re-run"),
    Case("truncated-export-file", T, damage(EXPORT_VALIDATION, cut_short), "validation.jsonl: its bytes"),
    Case("corrupted-export-manifest", T, damage(EXPORT_MANIFEST, cut_short), "kjv/manifest.json: not valid"),
    Case("export-manifest-of-other-format", T, damage(EXPORT_MANIFEST, format_csv), "in another format"),
    Case("export-without-train-split", T, export_without_train, "export has no 'train' or 'validation'"),
    Case("tokenized-folder-is-a-file", T, tokens_folder_is_a_file, "paths.cache_dir: cannot write"),
    Case("unknown-key-tokenize", T, edit("tokenize", vocab=600), "tokenize.vocab: unknown key"),
    Case("wrong-type-vocab-size", T, edit("tokenize", vocab_size="big"), "tokenize.vocab_size: expected"),
    Case("eos-not-special", T, edit("tokenize", special_tokens=["<pad>"]), "tokenize.eos_token: '<|endof"),
    Case("dataset-not-downloaded", T, edit("tokenize", datasets=["wiki"]), "tokenize.datasets: 'wiki' is"),
    Case("mixture-names-unknown", R, edit("train", mixture={"wiki": 1}), "train.mixture: 'wiki' is not in"),
    Case("params-not-utf8", T, raw_params(b"train:\n  lr: caf\xe9\n"), "(line 2): byte 0xe9 is not UTF-8"),
    # -- the train stage and python src/train/train.py: start-up checks, tokens, checkpoints, MLflow
    Case("gpu-without-gpu", R, edit("train", accelerator="gpu"), "train.accelerator: gpu, but", True, NO_GPU),
    Case(
        "ray-gpu-without-gpu", P, edit("ray", use_ray=True, use_gpu=True), "ray.use_gpu: true", needs=NO_GPU
    ),
    Case("ray-more-workers-than-cores", P, ray_workers(512), "ray.num_workers: 512 workers x 1 CPU"),
    Case("ray-fsdp-on-cpu-workers", P, edit("ray", use_ray=True, strategy="fsdp"), "fsdp runs on GPU"),
    Case("validation-shorter-than-a-window", R, edit("train", max_length=16384), HOLD_OUT_MORE, True),
    Case("validation-file-shorter-than-a-window", R, one_byte_validation_file, ADD_TEXT, absent=FRACTION),
    Case("train-split-shorter-than-windows", P, edit("train", max_length=70000), "train.max_length: 70000"),
    Case("model-dir-under-a-file", P, under_a_file("model_dir"), "paths.model_dir: cannot write"),
    Case("model-dir-parent-read-only", P, read_only_parent, "paths.model_dir: cannot", needs=PERMISSIONS),
    Case("checkpoint-dir-under-a-file", P, under_a_file("checkpoint_dir"), "paths.checkpoint_dir: cannot"),
    Case("metrics-file-is-a-folder", R, metrics_file_is_a_folder, "paths.metrics_file: "),
    Case("plots-dir-is-a-file", P, plots_dir_is_a_file, "paths.plots_dir: "),
    Case("model-dir-outside-the-project", C, outside("model_dir", True), OUTSIDE_THE_PROJECT, True),
    Case("model-dir-on-another-disk", C, outside("model_dir"), on_another_disk("model_dir")),
    Case("metrics-file-outside-the-project", R, outside("metrics_file", True), "paths.metrics_file: '../o"),
    Case("plots-dir-outside-the-project", P, outside("plots_dir"), on_another_disk("plots_dir")),
    Case("log-dir-argument-under-a-file", P, a_file, "--log-dir: cannot write", args=LOGS_UNDER_A_FILE),
    Case("damaged-mlflow-store", P, damaged_store, "mlflow.tracking_uri: cannot use the MLflow", True),
    Case("read-only-mlflow-store", P, read_only_store, "mlflow.tracking_uri: cannot", needs=PERMISSIONS),
    Case("mlflow-store-under-a-file", P, store_under_a_file, "mlflow.tracking_uri: cannot write"),
    Case("mlflow-password-holds-an-at", P, unreachable_server("u5er:pa@ss9"), HIDDEN_USERINFO, absent=AT),
    Case("mlflow-token-as-user-name", P, unreachable_server("tok3n"), HIDDEN_USERINFO, absent=("tok3n",)),
    Case("missing-tokens", R, remove("tokens/"), "kjv/manifest.json: not found; run `dvc repro tokenize`"),
    Case("truncated-train-bin", P, damage(TRAIN_BIN, cut_short), "kjv/train.bin: truncated or damaged", True),
    Case("same-size-corrupted-tokens", P, damage(TRAIN_BIN, zero_first_half), "bpe/kjv/train.bin: its bytes"),
    Case("corrupted-token-manifest", P, damage(TOKEN_MANIFEST, cut_short), "kjv/manifest.json: not valid"),
    Case("token-manifest-of-other-format", P, damage(TOKEN_MANIFEST, format_blocks), "in another format"),
    Case("tokens-of-another-tokenizer", P, other_tokenizer, "tokens were made by tokenizer"),
    Case("tokenizer-files-missing", R, remove(TOKENIZER_JSON), "kjv/tokenizer: cannot load the tokenizer"),
    Case("planted-pickle-checkpoint", P, planted_pickle, "999.ckpt: refused", absent=("file:ran",)),
    Case("checkpoint-of-another-shape", P, foreign_checkpoint, "configuration (model.n_embd: 32 -> 16)"),
    Case("missing-pretrained-folder", P, edit("model", pretrained="./m"), "model.pretrained: folder m does"),
    Case("empty-sample-prompt", P, edit("train", sample_prompt=""), "train.sample_prompt: must not be"),
    Case("unknown-key-train", P, edit("train", learning_rate=0.001), "train.learning_rate: unknown key"),
    Case("wrong-enum-precision", P, edit("train", precision="fp16"), "train.precision: expected one of"),
    Case("wrong-type-batch-size", P, edit("train", batch_size="16"), "train.batch_size: expected an int"),
    Case("out-of-range-lr", R, edit("train", lr=0), "train.lr: expected a number in (0, 10], got 0"),
    Case("warmup-past-max-steps", P, edit("train", warmup_steps=40), "train.warmup_steps: must be below"),
    Case("heads-do-not-divide-width", P, edit("model", n_head=3), "model.n_head: must divide model.n_embd"),
    Case("unknown-key-model", P, edit("model", layers=2), "model.layers: unknown key"),
    Case("model-config-sets-the-vocabulary", C, model_config(SMALL_VOCAB), "model.config.vocab_size: the"),
    Case("model-config-sets-the-width", P, model_config({"hidden_size": 12}), "set model.n_embd instead"),
    Case("model-config-sets-the-context", R, model_config({"n_ctx": 64}), "context is train.max_length"),
    Case("unknown-key-ray", P, edit("ray", gpus=1), "ray.gpus: unknown key"),
    Case("wrong-enum-ray-strategy", P, edit("ray", strategy="horovod"), "ray.strategy: expected one of"),
    Case("unknown-key-mlflow", P, edit("mlflow", uri="http://127.0.0.1:5000"), "mlflow.uri: unknown key"),
    Case("wrong-enum-resume", P, edit("train", resume="yes"), "train.resume: expected one of 'auto'"),
    Case("unknown-top-level-section", R, add_section("evaluation"), "evaluation: unknown key (expected one"),
    Case("duplicate-key", P, duplicate_lr, "duplicate key 'lr' (DVC refuses the file; keep one)"),
    Case("yaml-syntax-error", R, raw_params("train: [lr: 0.1\n"), "; fix the YAML syntax"),
    Case("params-is-a-folder", P, params_folder, "params.yaml: is a folder", args=PARAMS_FOLDER),
    Case("missing-params-file", P, nothing, "nope.yaml: file not found", args=MISSING_PARAMS),
    # -- dvc repro in the reproduced project: DVC runs the stage, the stage refuses
    Case("dvc-unknown-top-level-section", V, add_section("evaluation"), "evaluation: unknown key", True),
    Case("dvc-non-utf8-corpus", V, latin1_corpus, "corpus.jsonl line 3 is not valid utf-8", True),
    Case("dvc-model-dir-on-another-disk", V, outside("model_dir"), on_another_disk("model_dir"), True),
    Case("dvc-gpu-without-gpu", V, edit("train", accelerator="gpu"), "train.accelerator: gpu", True, NO_GPU),
    Case("dvc-validation-shorter-than-a-window", V, edit("train", max_length=100000), "fewer than one", True),
    Case("dvc-validation-file-shorter-than-a-window", V, dvc_one_byte_validation_file, DVC_ADD_TEXT, True),
]
# fmt: on


# --------------------------------------------------------------------------- running a command


@dataclass
class Outcome:
    code: int
    output: str
    """stdout and stderr together."""


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@contextlib.contextmanager
def argv(*args: str) -> Iterator[None]:
    saved = sys.argv
    sys.argv = list(args)
    try:
        yield
    finally:
        sys.argv = saved


def run_in_process(
    case: Case, project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Outcome:
    """The entry point's own code, as ``python -m`` / ``python <script>`` runs it, in this process.

    The stages read ``PARAMS_FILE`` (here the case's params) and keep their logs and scratch
    files in ``DVC_ROOT`` (here the case's folder), as under ``dvc exp run``.
    """
    import src.config

    monkeypatch.setattr(src.config, "PARAMS_FILE", project.params_file)
    monkeypatch.setenv("DVC_ROOT", str(project.root))
    args = [a.format(root=project.root) for a in case.args]
    capsys.readouterr()
    try:
        if case.command == P:
            script = PROJECT_ROOT / "src" / "train" / "train.py"
            logs = ["--log-dir", str(project.root / "logs")]
            with argv(str(script), "--params", str(project.params_file), *logs, *args):
                runpy.run_path(str(script), run_name="__main__")
        else:
            with argv(f"stages/{case.command}.py", *(args or (["kjv"] if case.command in (D, T) else []))):
                runpy.run_module(f"stages.{case.command}", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    captured = capsys.readouterr()
    return Outcome(code, captured.out + captured.err)


def code_copy(project: Project) -> None:
    """Make the case's folder a project of its own: ``python -m stages.<name>`` run there reads its
    ``params.yaml`` and runs this code."""
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("src", "stages"):
        shutil.copytree(PROJECT_ROOT / folder, project.root / folder, ignore=ignore)


def run_subprocess(case: Case, project: Project, python_runner, train_command, dvc) -> Outcome:
    """The command as a user types it: real stderr, real exit code."""
    args = [a.format(root=project.root) for a in case.args]
    if case.command == V:
        result = dvc(project.root, "repro", check=False)
    elif case.command == P:
        command = [*train_command(project.params_file), *args]
        result = python_runner(*command[1:], cwd=project.root)
    else:
        code_copy(project)
        stage_args = args or (["kjv"] if case.command in (D, T) else [])
        result = python_runner("-m", f"stages.{case.command}", *stage_args, cwd=project.root)
    return Outcome(result.returncode, result.stdout + result.stderr)


# --------------------------------------------------------------------------- the prepared project


@pytest.fixture
def case_project(trained_copy: Path) -> Path:
    """A private copy of the trained project, its params pointing into the copy."""
    return trained_copy


@pytest.fixture(scope="session")
def permissions_enforced() -> bool:
    """Whether a read-only folder stops this process from writing (not so for the superuser)."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        try:
            (folder / "probe").write_text("")
        except PermissionError:
            return True
        finally:
            folder.chmod(0o755)
    return False


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available()


def unlock(root: Path) -> None:
    """Give back write permission a case took away, so the folder can be removed."""
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o700)


# --------------------------------------------------------------------------- the test


def marks(case: Case) -> list:
    """DVC cases and training subprocesses (about 15 s each, most of it imports) are slow."""
    return [pytest.mark.slow] if case.command == V or (case.subprocess and case.command in (R, P)) else []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=marks(c)) for c in CASES])
def test_bad_input_is_one_line_and_loses_nothing(
    case: Case,
    request: pytest.FixtureRequest,
    permissions_enforced: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    python_runner,
    train_command,
    dvc,
) -> None:
    if case.needs == "permissions" and not permissions_enforced:
        pytest.skip("a read-only folder does not stop the superuser; the under-a-file cases check the same")
    if case.needs == "no GPU" and has_gpu():
        pytest.skip("this machine has a GPU")
    project = Project(request.getfixturevalue("dvc_project" if case.command == V else "case_project"))
    store_before = (project.root / "mlflow.db").exists()
    case.breaks(project)
    if project.params is not None:
        project.save()
    before = snapshot(project)
    try:
        if case.subprocess:
            outcome = run_subprocess(case, project, python_runner, train_command, dvc)
        else:
            outcome = run_in_process(case, project, monkeypatch, capsys)
    finally:
        unlock(project.root)

    shown = f"exit {outcome.code}, output:\n{outcome.output[-3000:]}"
    assert "Traceback" not in outcome.output, shown
    assert outcome.code != 0 and (case.command == V or outcome.code == 2), shown  # DVC exits with 1
    lines = error_lines(outcome.output)
    assert len(lines) == 1, shown
    assert case.expect in lines[0], shown
    for text in case.absent:
        if text.startswith("file:"):
            assert not (project.root / text[5:]).exists(), f"{text[5:]} was created"
        elif text.startswith("bytes:"):
            files = [p for p in project.root.rglob("*") if p.is_file() and not p.is_symlink()]
            holding = [str(p) for p in files if text[6:].encode() in p.read_bytes()]
            assert not holding, f"{text[6:]!r} was written into {holding}"
            assert text[6:] not in outcome.output, shown
        else:
            assert text not in outcome.output, shown
    assert snapshot(project) == before  # every earlier output, the last configuration's checkpoints too
    if not store_before and case.breaks not in (damaged_store, read_only_store):
        assert not (project.root / "mlflow.db").exists(), "an MLflow run was opened before the refusal"
