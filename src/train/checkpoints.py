"""Training checkpoints: written atomically with a digest, the newest K kept, resumed only with the
same params and only from bytes that match their digest.

A checkpoint holds everything that decides the rest of the run
(:class:`CheckpointState`): weights, optimizer and scheduler state, RNG states,
the step (which fixes the data position), the loss history and the MLflow run id.
Beside each one, ``<name>.sha256`` holds the SHA-256 of its bytes: a checkpoint that rotted on
shared storage, or whose write was cut short, is skipped for the newest one that verifies.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import json
import logging
import pickle
import random
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.config import Params
from src.errors import PipelineError
from src.paths import display_path
from src.train.history import History
from src.utils.files import HashingWriter, atomic_file, write_text_atomic
from src.utils.flatten import flatten
from src.utils.locks import LOCK_FILE, is_held
from src.utils.typed_config import as_plain_dict

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d+)\.ckpt$")

#: Bumped whenever the fields below change: a checkpoint of another version is not resumed.
CHECKPOINT_VERSION = 2

#: Settings that change how a run is operated, never its numbers: a checkpoint stays valid across them.
OPERATIONAL_KEYS = {
    "train.resume",
    "train.keep_checkpoints",
    "train.keep_configurations",
    "train.num_workers",
    "train.compile",
    "train.loss_chunk_tokens",  # the same loss in pieces (equal to float rounding), as compile is
    "train.fused_optimizer",  # the same AdamW step in one kernel (equal to float rounding)
    "train.peak_tflops",  # what MFU is measured against, not what is trained
    "ray.address",
    "ray.storage_path",
    "ray.max_failures",
    "mlflow.tracking_uri",  # where the numbers are recorded, not what they are
    "mlflow.experiment_name",
    "mlflow.register_model",
}


@dataclass(frozen=True)
class CheckpointState:
    """Everything a run needs to continue exactly where it stopped."""

    fingerprint: str
    """:func:`run_fingerprint` of the run that wrote it: only the same fingerprint resumes."""
    settings: dict[str, str]
    """:func:`shaping_settings` of the run that wrote it, to say what changed when it is not resumed."""
    inputs: dict[str, str]
    """Hashes of the tokenized data and of the training code."""
    step: int
    """Optimizer steps done; it also fixes the position in the window order."""
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    history: History
    mlflow_run_id: str | None
    version: int = CHECKPOINT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``torch.save`` (the history as its state dict)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["history"] = self.history.state()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> CheckpointState:
        version = data.get("version") if isinstance(data, dict) else None
        if version != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint format {version!r}, this version reads {CHECKPOINT_VERSION}")
        return cls(**{**data, "history": History.from_state(data["history"])})


#: How the global batch is split: windows per device and micro-batch, micro-batches per step, and
#: devices. Only their product, the global batch, decides the numbers: the window order is a function
#: of the global position, and DDP averages the same gradients whichever way the batch is split (to
#: float rounding). So a run checkpointed on 2 Ray workers resumes on 1 with twice the batch (elastic
#: resume), and a changed global batch is a new configuration.
BATCH_SPLIT_KEYS = ("train.batch_size", "train.accumulate_grad_batches", "ray.num_workers")
GLOBAL_BATCH = "train.global_batch"


def global_batch(params: Params) -> int:
    """Windows per optimizer step over all devices: ``batch_size x accumulate_grad_batches x workers``."""
    devices = params.ray.num_workers if params.ray.use_ray else 1
    return params.train.batch_size * params.train.accumulate_grad_batches * devices


def shaping_settings(params: Params) -> dict[str, str]:
    """The settings that decide a run's numbers, flattened (``train.lr`` -> ``"0.003"``) for the
    fingerprint and for saying what changed: all but the operational ones, with the batch split
    replaced by the global batch it makes."""
    settings = flatten(as_plain_dict(params))
    shaping = {k: v for k, v in settings.items() if k not in OPERATIONAL_KEYS and k not in BATCH_SPLIT_KEYS}
    shaping[GLOBAL_BATCH] = str(global_batch(params))
    return shaping


def code_fingerprint(files: Iterable[str], root: Path) -> str:
    """Hash of the given files (relative to ``root``): a checkpoint of other code is not resumed.

    A Python file counts by what it does: its syntax tree without docstrings, so an edit of a
    comment, a docstring or the formatting keeps an interrupted run resumable.
    """
    digest = hashlib.sha256()
    for name in sorted(files):
        path = root / name
        content = _code_without_docs(path) if path.suffix == ".py" else path.read_bytes()
        digest.update(name.encode() + b"\0" + content)
    return digest.hexdigest()


def _code_without_docs(path: Path) -> bytes:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            # a bare string does nothing: docstrings, and those after a dataclass field
            node.body = [statement for statement in node.body if not _is_bare_string(statement)]
            node.body = node.body or [ast.Pass()]
    return ast.dump(tree).encode()  # no line numbers: formatting does not count


def _is_bare_string(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def run_fingerprint(shaping: dict[str, str], inputs: dict[str, str]) -> str:
    """Hash of the settings that shape training (:func:`shaping_settings`) and of its inputs (token
    manifests, code)."""
    text = json.dumps({"settings": shaping, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def describe_change(state: CheckpointState, shaping: dict[str, str], inputs: dict[str, str]) -> str:
    """What differs between the run that wrote a checkpoint and this one, for the log."""
    before, now = state.settings, shaping
    changes = [
        f"{k}: {before.get(k, '-')} -> {now.get(k, '-')}"
        for k in sorted(before.keys() | now.keys())
        if before.get(k) != now.get(k)
    ]
    changes += [f"the {name}" for name in sorted(inputs) if state.inputs.get(name) != inputs[name]]
    return ", ".join(changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5 else "") or "unknown"


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:09d}.ckpt"


def digest_path(checkpoint: Path) -> Path:
    """Where the SHA-256 of ``checkpoint``'s bytes is kept."""
    return checkpoint.with_name(checkpoint.name + DIGEST_SUFFIX)


DIGEST_SUFFIX = ".sha256"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def rng_states() -> dict[str, Any]:
    """Every random generator's state as tensors and plain data (loadable with ``weights_only``)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_state(path: Path, state: CheckpointState) -> None:
    """``torch.save`` the state to ``path`` atomically, its digest beside it.

    The digest is hashed from the bytes as they are written and lands first: a kill between
    the two leaves a digest that matches no checkpoint (the step is written again), never a
    checkpoint that verifies without being whole.
    """
    with atomic_file(path) as handle:
        hashing = HashingWriter(handle)
        torch.save(state.to_dict(), hashing)
        write_text_atomic(digest_path(path), f"{hashing.hexdigest()}  {path.name}\n")


class DamagedCheckpointError(Exception):
    """A checkpoint's bytes do not match its digest (or it has none): it is never loaded."""


class UnsafeCheckpointError(PipelineError):
    """A checkpoint holds objects other than tensors and plain data: loading it could run code."""


def verified_bytes(path: Path) -> bytes:
    """The bytes of ``path``, once their SHA-256 matches the digest written with them."""
    try:
        recorded = digest_path(path).read_text(encoding="utf-8").split()[0]
    except (FileNotFoundError, IndexError, UnicodeDecodeError):
        raise DamagedCheckpointError(f"it has no readable digest ({digest_path(path).name})") from None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != recorded:
        raise DamagedCheckpointError(f"its bytes do not match {digest_path(path).name}")
    return data


def read_state(path: Path) -> CheckpointState:
    """Load a verified checkpoint with ``weights_only=True``: tensors and plain data only, never code.

    Bytes that do not match their digest are never unpickled (:class:`DamagedCheckpointError`).
    A file that verifies but needs more than plain data is refused (:class:`UnsafeCheckpointError`),
    not skipped: it was not written by this pipeline, and it is left in place for whoever wrote it.
    """
    data = verified_bytes(path)
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" not in str(error):
            raise  # damaged bytes, not a forbidden object: the caller falls back to an older checkpoint
        raise UnsafeCheckpointError(
            f"{display_path(path)}: refused, it holds objects other than tensors and plain data "
            "(loading it could run code); delete it if you did not write it"
        ) from None
    return CheckpointState.from_dict(loaded)


def save_checkpoint(folder: Path, step: int, state: CheckpointState, keep: int) -> Path:
    """Write ``state`` as ``step-<n>.ckpt``, then drop all but the newest ``keep``.

    A run writes its steps in order, so a later step already in the folder is left from an earlier
    run of this configuration (``train.resume: never``): it goes once the new checkpoint is written,
    rather than outliving it and pushing the new one out.
    """
    target = checkpoint_path(folder, step)
    write_state(target, state)
    found = list_checkpoints(folder)
    stale = [path for path in found if path.name > target.name]  # zero-padded: name order is step order
    current = [path for path in found if path.name <= target.name]
    for old in stale + current[:-keep]:
        old.unlink()
        digest_path(old).unlink(missing_ok=True)
    kept = {digest_path(path).name for path in list_checkpoints(folder)}
    for digest in folder.glob(f"step-*.ckpt{DIGEST_SUFFIX}"):  # of a write a kill cut short
        if digest.name not in kept:
            digest.unlink(missing_ok=True)
    return target


def newest_readable(paths: Iterable[Path]) -> tuple[Path, CheckpointState] | None:
    """The newest of ``paths`` (oldest first) that loads; damaged files are skipped with a warning."""
    for path in reversed(list(paths)):
        try:
            return path, read_state(path)
        except UnsafeCheckpointError:
            raise
        except DamagedCheckpointError as error:  # rotted on disk, or its write was cut short
            log.warning("%s is not resumed: %s; trying an older checkpoint", display_path(path), error)
        except Exception as error:  # of another version: try the one before
            last_line = (str(error).strip().splitlines() or [""])[-1][:200]
            log.warning(
                "%s is unreadable (%s: %s); trying an older checkpoint",
                display_path(path),
                type(error).__name__,
                last_line,
            )
    return None


def find_resumable(
    folder: Path, shaping: dict[str, str], inputs: dict[str, str]
) -> tuple[CheckpointState | None, str]:
    """The newest readable checkpoint of this configuration's ``folder``, and why it was (not) chosen.

    A damaged file is skipped for the one before (the resumed run writes that step again). A
    checkpoint of other settings or inputs cannot have been written into this configuration's
    folder by a run: someone put it there, so it is refused with one line and left in place,
    rather than being trained past and later deleted as a stale step.
    """
    candidates = list_checkpoints(folder)
    if not candidates:
        return None, "no checkpoint yet"
    found = newest_readable(candidates)
    if found is None:
        return None, "no checkpoint that verifies: starting afresh"
    path, state = found
    if state.fingerprint != run_fingerprint(shaping, inputs):
        change = describe_change(state, shaping, inputs)
        raise PipelineError(
            f"{display_path(path)}: made by another configuration ({change}), so it does not belong in "
            f"{display_path(folder)}; move it out (or set train.resume: never to start afresh here)"
        )
    return state, f"resuming from {display_path(path)} (step {state.step})"


def configuration_folder(root: Path, fingerprint: str, prefix: str = "run-") -> Path:
    """Each configuration checkpoints into a folder of its own: a run of other settings (an
    experiment, a typo) never touches the resumable state of another."""
    return root / f"{prefix}{fingerprint[:16]}"


def nearest_other_configuration(
    root: Path, current: Path, shaping: dict[str, str], inputs: dict[str, str], prefix: str = "run-"
) -> str:
    """For the log when a run starts afresh: what differs from the newest other configuration kept."""
    others = sorted(
        (p for p in root.glob(f"{prefix}*") if p.is_dir() and p != current),
        key=lambda p: p.stat().st_mtime_ns,
    )
    if not others:
        return "no checkpoint yet"
    try:
        found = newest_readable(
            list_checkpoints(others[-1]) or sorted(others[-1].glob("checkpoint_*/*.ckpt"))
        )
    except PipelineError:
        found = None
    change = describe_change(found[1], shaping, inputs) if found else "unknown"
    return (
        f"no checkpoint of these settings yet; kept {display_path(others[-1])} (and {len(others) - 1} more) "
        f"differs in {change}"
    )


def prune_configurations(root: Path, current: Path, keep: int, prefix: str = "run-") -> list[Path]:
    """After a finished run: keep the ``keep`` newest configuration folders (``current`` always).

    Also removes checkpoints an older version left loose in ``root`` (no configuration owns them).
    """
    others = [p for p in root.glob(f"{prefix}*") if p.is_dir() and p != current]
    others.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    loose = list_checkpoints(root)
    unused = [p for p in others[max(keep - 1, 0) :] if not is_held(p / LOCK_FILE)]  # none that trains now
    removed = unused + loose + [digest_path(path) for path in loose]
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed
