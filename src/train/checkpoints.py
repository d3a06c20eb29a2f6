"""Training checkpoints: written atomically, the newest K kept, resumed only with the same params.

A checkpoint holds everything that decides the rest of the run: weights,
optimizer and scheduler state, RNG states, the step (which fixes the data
position), the loss history and the MLflow run id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.paths import display_path

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d+)\.ckpt$")

#: Settings that change how a run is operated, never its numbers: a checkpoint stays valid across them.
OPERATIONAL_KEYS = {
    "train.resume",
    "train.keep_checkpoints",
    "train.num_workers",
    "train.compile",
    "ray.address",
    "ray.storage_path",
    "ray.max_failures",
}


def shaping_settings(settings: dict[str, str]) -> dict[str, str]:
    """The flattened settings that decide a run's numbers (all but the operational ones)."""
    return {k: v for k, v in settings.items() if k not in OPERATIONAL_KEYS}


def code_fingerprint(folder: Path) -> str:
    """Hash of every Python file under ``folder``: a checkpoint of other code is not resumed."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_fingerprint(settings: dict[str, str], inputs: dict[str, str]) -> str:
    """Hash of the settings that shape training and of its inputs (token manifest, code)."""
    text = json.dumps({"settings": shaping_settings(settings), "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def describe_change(state: dict[str, Any], settings: dict[str, str], inputs: dict[str, str]) -> str:
    """What differs between the run that wrote a checkpoint and this one, for the log."""
    if "settings" not in state:
        return "it predates recorded settings"
    before, now = state.get("settings", {}), shaping_settings(settings)
    changes = [
        f"{k}: {before.get(k, '-')} -> {now.get(k, '-')}"
        for k in sorted(before.keys() | now.keys())
        if before.get(k) != now.get(k)
    ]
    old_inputs = state.get("inputs", {})
    changes += [f"the {name}" for name in sorted(inputs) if old_inputs.get(name) != inputs[name]]
    return ", ".join(changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5 else "") or "unknown"


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:09d}.ckpt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as ``step-<n>.ckpt`` via a temporary file, then drop all but the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(folder, step)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink()
    return target


def newest_readable(paths: Iterable[Path]) -> tuple[Path, dict[str, Any]] | None:
    """The newest of ``paths`` (oldest first) that loads; damaged files are skipped with a warning."""
    for path in reversed(list(paths)):
        try:
            return path, torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # a file cut short by a kill: try the one before
            log.warning("%s is unreadable (%s); trying an older checkpoint", display_path(path), error)
    return None


def find_resumable(
    folder: Path, settings: dict[str, str], inputs: dict[str, str]
) -> tuple[dict[str, Any] | None, str]:
    """The newest readable checkpoint made with these settings and inputs, and why it was (not) chosen."""
    candidates = list_checkpoints(folder)
    if not candidates:
        return None, "no checkpoint yet"
    found = newest_readable(candidates)
    if found is None:
        return None, "no readable checkpoint"
    path, state = found
    if state.get("fingerprint") != run_fingerprint(settings, inputs):
        change = describe_change(state, settings, inputs)
        return None, f"starting afresh: {display_path(path)} was made with other settings ({change})"
    return state, f"resuming from {display_path(path)} (step {state['step']})"


def clear_checkpoints(folder: Path) -> None:
    """Remove checkpoints of another configuration before a fresh run writes its own."""
    for path in list_checkpoints(folder):
        path.unlink()
