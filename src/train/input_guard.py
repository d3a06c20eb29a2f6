"""The train stage's inputs as it read them at start, checked again before it writes its outputs.

DVC records a stage's params and deps as they are on disk when the stage ends, not as the stage
read them. A colleague's ``dvc exp run -S train.lr=...`` in the same workspace rewrites
``params.yaml`` before it finds DVC's lock taken, and the training running meanwhile would then be
recorded under the other's settings, with ``dvc status`` clean. So a training compares its params
sections and the files of its deps (code and tokens, by size and modification time) with what it
started from, and if anything changed refuses to write outputs that DVC would record falsely.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src.config import Params, load_params
from src.errors import ConfigError, PipelineError
from src.paths import PROJECT_ROOT, display_path, resolve_path
from src.train.run_inputs import TRAIN_STAGE
from src.utils.flatten import flatten
from src.utils.import_graph import code_dependencies
from src.utils.typed_config import as_plain_dict

#: The params of the train stage in ``dvc.yaml`` (tests/test_stage_deps.py checks they agree).
TRAIN_PARAMS = ("tokenize.datasets", "model", "train", "ray", "mlflow")


@dataclass(frozen=True)
class InputSnapshot:
    """What the run started from: its params (flattened, the train stage's sections) and dep files."""

    params_file: Path | None
    """The params file the run read; None when the caller gave params without one."""
    settings: dict[str, str]
    files: dict[Path, tuple[int, int]]
    """(size, modification time in ns) of every file of the stage's deps."""


def stage_settings(params: Params) -> dict[str, str]:
    """The flattened values of :data:`TRAIN_PARAMS`, the part of ``params.yaml`` DVC records for train."""
    return {
        key: value
        for key, value in flatten(as_plain_dict(params)).items()
        if any(key == section or key.startswith(f"{section}.") for section in TRAIN_PARAMS)
    }


def dep_files(params: Params, root: Path) -> dict[Path, tuple[int, int]]:
    """Size and modification time of the train stage's code files and of every tokenized file."""
    tokenized = resolve_path(params.paths.cache_dir, root) / "tokenized" / params.tokenize.tokenizer
    paths = [PROJECT_ROOT / name for name in code_dependencies(TRAIN_STAGE)]
    paths += sorted(path for path in tokenized.rglob("*") if path.is_file())
    found = {}
    for path in paths:
        stat = path.stat()
        found[path] = (stat.st_size, stat.st_mtime_ns)
    return found


def snapshot_inputs(params: Params, root: Path, params_file: Path | None) -> InputSnapshot:
    return InputSnapshot(params_file, stage_settings(params), dep_files(params, root))


def check_unchanged(snapshot: InputSnapshot, params: Params, root: Path) -> None:
    """Refuse, in one line, to end a run whose params sections or dep files changed while it ran."""
    changes = []
    if snapshot.params_file is not None:
        shown = display_path(snapshot.params_file)
        try:
            now = stage_settings(load_params(snapshot.params_file))
        except ConfigError as error:
            now, changes = {}, [f"{shown} no longer loads ({error})"]
        changes += [
            f"{key}: {snapshot.settings.get(key, '-')} -> {now.get(key, '-')}"
            for key in sorted(snapshot.settings.keys() | now.keys())
            if snapshot.settings.get(key) != now.get(key) and now
        ]
    files = dep_files(params, root) if not changes else snapshot.files
    changes += [
        display_path(path)
        for path in sorted(snapshot.files.keys() | files.keys())
        if snapshot.files.get(path) != files.get(path)
    ]
    if changes:
        listed = ", ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise PipelineError(
            f"the train stage's inputs changed while it ran ({listed}): its outputs would be recorded "
            "under inputs they were not made from, so none were written (its checkpoints are kept); "
            "run it again once nothing else changes them (two experiments at once: dvc exp run --queue)"
        )
