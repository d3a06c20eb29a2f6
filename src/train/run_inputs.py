"""What is decided before training starts: the data, the tokenizer, the settings and their fingerprint.

Both backends (one process, a Ray worker group) start from the same
:class:`RunInputs`; the driver adds the checkpoint it resumes from, and every
Ray worker rebuilds the same value from the params it is sent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.config import Params
from src.data.manifests import MANIFEST
from src.data.raw_export import TRAIN, VALIDATION
from src.data.token_files import (
    TOKENIZER_DIR,
    TokenFolder,
    ValidationSources,
    check_tokenizer,
    read_token_manifest,
    verify_token_files,
)
from src.data.tokenizer_setup import load_tokenizer_folder, tokenizer_fingerprint
from src.data.windows import windows_per_epoch
from src.errors import ConfigError, PipelineError
from src.models.causal_lm import Vocabulary
from src.paths import PROJECT_ROOT, display_path
from src.train.checkpoints import CheckpointState, code_fingerprint, run_fingerprint, shaping_settings
from src.utils.files import sha256_file
from src.utils.flatten import flatten
from src.utils.hub import check_folder_exists
from src.utils.import_graph import code_dependencies
from src.utils.typed_config import as_plain_dict

#: The entry point whose code a checkpoint is bound to: the same files as the train stage's code deps.
TRAIN_STAGE = "stages/train.py"


@dataclass(frozen=True)
class RunInputs:
    """The inputs of one training run, fixed before the first step."""

    sources: tuple[TokenFolder, ...]
    """The token folders mixed in training (``tokenize.datasets``), in that order."""
    tokenizer: Any
    """The ``transformers`` tokenizer saved with the tokens."""
    settings: dict[str, str]
    """Every params value, flattened (``train.lr`` -> ``"0.003"``): the MLflow run's params."""
    shaping: dict[str, str]
    """:func:`~src.train.checkpoints.shaping_settings` of the params: what the fingerprint hashes."""
    inputs: dict[str, str]
    """Hashes of what training reads besides the settings: the tokenized data and the code."""
    fingerprint: str
    """:func:`~src.train.checkpoints.run_fingerprint`: a checkpoint resumes only under the same one."""
    resumed: CheckpointState | None = None
    """The checkpoint this run continues, if any."""

    @property
    def step(self) -> int:
        """The first optimizer step this run takes (0 for a fresh run)."""
        return self.resumed.step if self.resumed else 0

    @property
    def vocabulary(self) -> Vocabulary:
        tokenizer = self.sources[0].manifest.tokenizer  # the same in every folder (checked)
        return Vocabulary(tokenizer.vocab_size, tokenizer.eos_id, self.tokenizer.bos_token_id)

    @property
    def validation(self) -> ValidationSources:
        """The validation sources as the data module orders them, with their texts' UTF-8 bytes."""
        return ValidationSources.of((source.name, source.manifest) for source in self.sources)

    @property
    def token_dirs(self) -> dict[str, Path]:
        return {source.name: source.path for source in self.sources}

    def resuming(self, state: CheckpointState | None) -> RunInputs:
        """The same inputs, continuing from ``state``."""
        return dataclasses.replace(self, resumed=state)


def training_code_fingerprint() -> str:
    """Hash of the code the train stage runs: exactly the files ``dvc.yaml`` lists as its code deps.

    Always the running code (``PROJECT_ROOT``), wherever a run's ``root`` puts its outputs.
    """
    return code_fingerprint(code_dependencies(TRAIN_STAGE), PROJECT_ROOT)


def check_windows(params: Params, source: TokenFolder) -> None:
    """Refuse, at start-up, token splits too short for one window of ``train.max_length`` per rank
    (the data module would find out at its first batch, or at the first validation)."""
    length = params.train.max_length
    ranks = params.ray.num_workers if params.ray.use_ray else 1
    token_dir, manifest = source.path, source.manifest
    for split in (TRAIN, VALIDATION):
        if split not in manifest.splits:
            has = ", ".join(manifest.splits)
            raise PipelineError(
                f"{display_path(token_dir / MANIFEST)}: no {split!r} split (it has {has}); "
                "re-run `dvc repro tokenize`"
            )
    train, validation = manifest.splits[TRAIN], manifest.splits[VALIDATION]
    if windows_per_epoch(train.tokens, length) < ranks:
        need = (ranks + 1) * length
        raise ConfigError(
            f"train.max_length: {length}-token windows need {need:,} training tokens"
            f"{f' for {ranks} ranks' if ranks > 1 else ''}, {display_path(token_dir / train.file)} holds "
            f"{train.tokens:,}; lower train.max_length or use a larger corpus"
        )
    if validation.tokens < length:
        key = params.download.key_of(source.name)
        files = validation_files(params, source.name)
        if files is not None:  # the source's own files: no fraction of it is held out
            raise ConfigError(
                f"{key}.data_files.validation: {files} holds {validation.tokens:,} validation tokens "
                f"({display_path(token_dir / validation.file)}), fewer than one {length}-token window "
                "(train.max_length); add text to it, or lower train.max_length"
            )
        raise ConfigError(
            f"train.max_length: {display_path(token_dir / validation.file)} holds {validation.tokens:,} "
            f"validation tokens, fewer than one {length}-token window; lower train.max_length, or hold out "
            f"more text ({key}.validation_fraction)"
        )


def validation_files(params: Params, name: str) -> str | None:
    """The files a dataset's validation split is read from, as a message names them (``'valid.txt'``
    in data_dir ``'corpus'``), or None when it is held out of the train split."""
    spec = params.download.all_datasets().get(name)
    if spec is None or not isinstance(spec.data_files, dict) or VALIDATION not in spec.data_files:
        return None
    entries = spec.data_files[VALIDATION]
    shown = ", ".join(repr(entry) for entry in ([entries] if isinstance(entries, str) else entries))
    return f"{shown} in data_dir {spec.data_dir!r}" if spec.data_dir is not None else shown


def read_token_folder(params: Params, root: Path, name: str) -> TokenFolder:
    """One dataset's token folder, its files checked against its manifest."""
    token_dir = params.paths.token_dir(params.tokenize.tokenizer, name, root)
    manifest = read_token_manifest(token_dir)
    verify_token_files(token_dir, manifest)  # before anything starts: never train on unchecked bytes
    source = TokenFolder(name, token_dir, manifest, sha256_file(token_dir / MANIFEST))
    check_windows(params, source)
    return source


def prepare_run_inputs(params: Params, root: Path) -> RunInputs:
    """Read the token manifests and tokenizer and fingerprint the run (the resume point comes later)."""

    if params.model.pretrained:
        check_folder_exists(params.model.pretrained, key="model.pretrained")  # loaded only after start
    sources = tuple(read_token_folder(params, root, name) for name in params.tokenize.datasets)
    shaping = shaping_settings(params)
    inputs = {f"tokens of {source.name}": source.manifest_sha256 for source in sources}
    inputs["code"] = training_code_fingerprint()
    tokenizer = load_tokenizer_folder(
        sources[0].path / TOKENIZER_DIR, "tokenize", trust_remote_code=params.model.trust_remote_code
    )
    fingerprint = tokenizer_fingerprint(tokenizer)
    for source in sources:  # all made by the one tokenizer: the same ids mean the same text
        check_tokenizer(source.path, source.manifest, fingerprint)
    return RunInputs(
        sources=sources,
        tokenizer=tokenizer,
        settings=flatten(as_plain_dict(params)),
        shaping=shaping,
        inputs=inputs,
        fingerprint=run_fingerprint(shaping, inputs),
    )
