"""What the data stages check again at their end (see :mod:`src.input_guard`): the params ``dvc.yaml``
lists for each (tests/test_stage_deps.py checks they agree), their code and their dep files."""

from __future__ import annotations

from pathlib import Path

from src.config import Params
from src.input_guard import StageInputs, stage_files
from src.paths import PROJECT_ROOT, resolve_path

#: The tokenizer stage's params in ``dvc.yaml``: the settings that change its bytes.
TOKENIZER_PARAMS = (
    "tokenize.tokenizer",
    "tokenize.vocab_size",
    "tokenize.min_frequency",
    "tokenize.special_tokens",
    "tokenize.eos_token",
    "model.trust_remote_code",
)
#: The tokenize@<dataset> stages' params in ``dvc.yaml``.
TOKENIZE_PARAMS = ("model.trust_remote_code",)


def download_inputs(params: Params, dataset: str, root: Path = PROJECT_ROOT) -> StageInputs:
    """``download@<dataset>`` (``download.datasets``) or ``download_local@<dataset>``, whose folder
    ``data_dir`` is a dep too."""
    local = params.download.local.get(dataset)
    key = f"download.local.{dataset}" if local is not None else f"download.datasets.{dataset}"
    folders = [resolve_path(local.data_dir, root)] if local is not None and local.data_dir else []
    stage = f"{'download_local' if local is not None else 'download'}@{dataset}"
    return StageInputs(stage, (key,), lambda: stage_files("stages/download.py", folders))


def tokenizer_inputs(params: Params, root: Path = PROJECT_ROOT) -> StageInputs:
    """``tokenizer``: its settings and the first dataset's export, which the BPE learns from."""
    export = params.paths.raw_dir(root) / params.tokenize.datasets[0]
    return StageInputs("tokenizer", TOKENIZER_PARAMS, lambda: stage_files("stages/tokenizer.py", [export]))


def tokenize_inputs(params: Params, dataset: str, root: Path = PROJECT_ROOT) -> StageInputs:
    """``tokenize@<dataset>``: the export and the tokenizer folder it encodes with."""
    tokenizer = params.paths.tokenizer_dir(params.tokenize.tokenizer, root)
    folders = [params.paths.raw_dir(root) / dataset, tokenizer]
    files = lambda: stage_files("stages/tokenize.py", folders)  # noqa: E731
    return StageInputs(f"tokenize@{dataset}", TOKENIZE_PARAMS, files)
