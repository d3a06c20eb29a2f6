"""A stage's inputs as it read them at start, checked again before its outputs are recorded.

DVC records a stage's params and deps as they are on disk when the stage ends, not as the stage
read them. A colleague's ``dvc exp run -S key=...`` in the same workspace rewrites ``params.yaml``
before it finds DVC's lock taken, and the stage running meanwhile would then be recorded under the
other's settings, with ``dvc status`` clean. So every stage that writes outputs compares the params
DVC records for it and the files of its deps (by size and modification time) with what it started
from, and if anything changed ends with one line and a non-zero exit, so that DVC records nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from src.config import Params, load_params
from src.errors import ConfigError, PipelineError
from src.paths import PROJECT_ROOT, display_path
from src.utils.flatten import flatten
from src.utils.import_graph import code_dependencies
from src.utils.typed_config import as_plain_dict


@dataclass(frozen=True)
class StageInputs:
    """What DVC records for one stage: its params keys (``dvc.yaml``'s ``params``) and its dep files."""

    stage: str
    """The stage's name in messages (``download@kjv``)."""
    params: tuple[str, ...]
    """The keys or sections of ``params.yaml`` the stage's ``params`` list names."""
    dep_files: Callable[[], Iterable[Path]]
    """The files of its deps, listed again at the check (a file added to a dep folder counts)."""
    not_recorded: str = "so this run is not recorded (the last recorded outputs stay in DVC's cache)"
    """What the refusal says was done about the outputs."""


@dataclass(frozen=True)
class InputSnapshot:
    """What a run started from."""

    inputs: StageInputs
    params_file: Path | None
    """The params file the run read; None when the caller gave params without one."""
    settings: dict[str, str]
    files: dict[Path, tuple[int, int]]
    """(size, modification time in ns) of every dep file."""


def stage_settings(params: Params, keys: Iterable[str]) -> dict[str, str]:
    """The flattened values under ``keys``: the part of ``params.yaml`` DVC records for a stage."""
    keys = tuple(keys)
    return {
        key: value
        for key, value in flatten(as_plain_dict(params)).items()
        if any(key == section or key.startswith(f"{section}.") for section in keys)
    }


def file_states(paths: Iterable[Path]) -> dict[Path, tuple[int, int]]:
    """Size and modification time of each file (a file missing now is left out: a change too)."""
    found = {}
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        found[path] = (stat.st_size, stat.st_mtime_ns)
    return found


def stage_files(entry: str, folders: Iterable[Path]) -> list[Path]:
    """The dep files of the stage run by ``entry``: its code and every file under ``folders``."""
    code = [PROJECT_ROOT / name for name in code_dependencies(entry)]
    return code + sorted(path for folder in folders for path in folder.rglob("*") if path.is_file())


def snapshot_inputs(inputs: StageInputs, params: Params, params_file: Path | None) -> InputSnapshot:
    settings = stage_settings(params, inputs.params)
    return InputSnapshot(inputs, params_file, settings, file_states(inputs.dep_files()))


def check_unchanged(snapshot: InputSnapshot) -> None:
    """Refuse, in one line, to end a run whose params or dep files changed while it ran."""
    inputs, changes = snapshot.inputs, []
    if snapshot.params_file is not None:
        shown = display_path(snapshot.params_file)
        try:
            now = stage_settings(load_params(snapshot.params_file), inputs.params)
        except ConfigError as error:
            now, changes = {}, [f"{shown} no longer loads ({error})"]
        changes += [
            f"{key}: {snapshot.settings.get(key, '-')} -> {now.get(key, '-')}"
            for key in sorted(snapshot.settings.keys() | now.keys())
            if snapshot.settings.get(key) != now.get(key) and now
        ]
    files = file_states(inputs.dep_files()) if not changes else snapshot.files
    changes += [
        display_path(path)
        for path in sorted(snapshot.files.keys() | files.keys())
        if snapshot.files.get(path) != files.get(path)
    ]
    if changes:
        listed = ", ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise PipelineError(
            f"the {inputs.stage} stage's inputs changed while it ran ({listed}): its outputs would be "
            f"recorded under inputs they were not made from, {inputs.not_recorded}; run it again once "
            "nothing else changes them (two experiments at once: dvc exp run --queue)"
        )


@contextmanager
def unchanged_inputs(inputs: StageInputs, params: Params, params_file: Path | None) -> Iterator[None]:
    """The block's stage work, then :func:`check_unchanged` (not on failure: that error comes first)."""
    snapshot = snapshot_inputs(inputs, params, params_file)
    yield
    check_unchanged(snapshot)
