"""Typed, validated view of ``params.yaml``: one frozen dataclass per section.

``params.yaml`` is the single place where settings live: DVC hashes its sections
into ``dvc.lock``, ``dvc exp run -S`` edits it, and the code reads it only
through :func:`load_params`, which rejects unknown keys, wrong types and
impossible values before any work starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.config.data import (
    BPE,
    TOKENIZER_FOLDER,
    DatasetSpec,
    DownloadConfig,
    PathsConfig,
    TokenizeConfig,
    available_cores,
)
from src.config.evaluation import BUILTIN_TASKS, EvaluateConfig
from src.config.training import DERIVED_MODEL_SETTINGS, MlflowConfig, ModelConfig, RayConfig, TrainConfig
from src.errors import ConfigError, FieldError
from src.paths import PROJECT_ROOT, display_path, resolve_path
from src.utils.typed_config import build
from src.utils.yaml_loader import load_yaml

__all__ = [
    "BPE",
    "BUILTIN_TASKS",
    "DERIVED_MODEL_SETTINGS",
    "PARAMS_FILE",
    "TOKENIZER_FOLDER",
    "DatasetSpec",
    "DownloadConfig",
    "EvaluateConfig",
    "MlflowConfig",
    "ModelConfig",
    "Params",
    "PathsConfig",
    "RayConfig",
    "TokenizeConfig",
    "TrainConfig",
    "available_cores",
    "check_outputs_in_project",
    "load_params",
    "parse_params",
]

PARAMS_FILE = PROJECT_ROOT / "params.yaml"


@dataclass(frozen=True)
class Params:
    """Everything in ``params.yaml``."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    """Output and cache locations."""
    download: DownloadConfig = field(default_factory=DownloadConfig)
    """The download stage."""
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    """The tokenize stage."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Distributed training with Ray Train."""
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    """MLflow tracking."""
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    """Downstream evaluation of the trained model (lm-evaluation-harness)."""

    def __post_init__(self) -> None:
        for key in self.model.config:
            if key in DERIVED_MODEL_SETTINGS:
                raise FieldError(f"model.config.{key}", DERIVED_MODEL_SETTINGS[key])
        cache_dir = resolve_path(self.paths.cache_dir)
        for name, spec in self.download.local.items():
            folder = resolve_path(spec.data_dir or ".")
            if folder == PROJECT_ROOT or not (spec.data_dir or "").strip():
                raise FieldError(
                    f"download.local.{name}.data_dir",
                    "the project root would be the corpus (and DVC would watch all of it); give the "
                    "folder that holds the files",
                )
            if cache_dir == folder or folder in cache_dir.parents:
                raise FieldError(
                    f"download.local.{name}.data_dir",
                    f"{spec.data_dir!r} holds paths.cache_dir, where the exports and tokens are written; "
                    "give a folder outside it",
                )
        known = self.download.all_datasets()
        for name in self.tokenize.datasets:
            if name not in known:
                raise FieldError(
                    "tokenize.datasets",
                    f"{name!r} is not in download.datasets or download.local ({', '.join(known)})",
                )
        mixture, tokenized = set(self.train.mixture), set(self.tokenize.datasets)
        if mixture and mixture != tokenized:
            extra, missing = sorted(mixture - tokenized), sorted(tokenized - mixture)
            problem = (
                f"{extra[0]!r} is not in tokenize.datasets; add it there"
                if extra
                else f"no weight for {missing[0]!r} of tokenize.datasets; give it one (0 = validate only)"
            )
            raise FieldError("train.mixture", problem)


#: ``paths.*`` keys whose folders hold DVC outputs (``dvc.yaml`` templates its ``outs``, ``metrics``
#: and ``plots`` from them). DVC tracks outputs inside its repository only; ``model_cache``,
#: ``log_dir`` and ``checkpoint_dir`` are no outputs and may be anywhere.
DVC_OUTPUT_PATHS = ("cache_dir", "model_dir", "metrics_file", "plots_dir", "eval_dir", "eval_metrics_file")


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_outputs_in_project(paths: PathsConfig, root: Path) -> None:
    """Refuse a ``paths.*`` DVC output outside the project at ``root`` (relative paths start there).

    The test is on the path as written, links not followed: a symlink inside the project that
    leads to another disk is inside it for DVC too."""
    folder = os.path.normpath(os.path.abspath(root))
    folders = (folder, os.path.realpath(folder))
    for key in DVC_OUTPUT_PATHS:
        value = getattr(paths, key)
        where = os.path.normpath(os.path.join(folder, os.path.expanduser(value)))
        if not any(_is_within(where, inside) for inside in folders):
            raise ConfigError(
                f"paths.{key}: {value!r} is outside the project ({display_path(root)}), and DVC cannot "
                "track an output outside its repository; use a path inside the project (to keep the "
                "data on another disk, a symlink inside the project pointing there)"
            )


def parse_params(data: Any) -> Params:
    """Validate already-parsed YAML data (e.g. a dict sent to a worker)."""
    return build(Params, data, "")


def load_params(path: str | Path | None = None) -> Params:
    """Read and validate a params file (default :data:`PARAMS_FILE`); any problem is one
    :class:`ConfigError` line.

    The project's own params file (the one the DVC stages read) must also keep every DVC output
    inside the project (:func:`check_outputs_in_project`); a params file elsewhere, given to a script
    with ``--params``, belongs to no DVC project and may put its outputs anywhere."""
    path = resolve_path(PARAMS_FILE if path is None else path)
    shown = display_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{shown}: file not found; run from the project root or pass --params") from None
    except IsADirectoryError:
        raise ConfigError(f"{shown}: is a folder, expected the params file; pass --params <file>") from None
    except OSError as error:
        raise ConfigError(f"{shown}: cannot read it ({error.strerror}); make it readable") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            f"{shown} (line {line}): byte 0x{raw[error.start]:02x} is not UTF-8; save the file as UTF-8 "
            "(DVC reads it as UTF-8 too)"
        ) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{shown}{where}: {problem}; fix the YAML syntax") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{shown}: expected a mapping of sections at the top level")
    params = parse_params(data or {})
    stage_file = resolve_path(PARAMS_FILE)
    if path == stage_file or path.resolve() == stage_file.resolve():
        check_outputs_in_project(params.paths, stage_file.parent)  # the file the DVC stages read
    return params
