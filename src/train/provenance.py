"""Where a run came from: the code (git commit, entry point), the DVC experiment and the exact data.

These become the run's MLflow tags, so a run in the UI names the commit, the ``dvc exp`` and the
token and export hashes (as ``dvc.lock`` records them) it was trained from.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from src.data.manifests import MANIFEST
from src.data.token_files import TokenFolder
from src.paths import PROJECT_ROOT, display_path
from src.utils.files import sha256_file

EXP_NAME_TAG = "dvc.exp_name"
#: The digest of the weights a training saved (:func:`weights_digest`): the evaluate stage finds the
#: run that made a model folder by it.
MODEL_DIGEST_TAG = "lmpipe.model.weights_sha256"


def weights_digest(model_dir: Path) -> str:
    """SHA-256 over the model folder's weight files (each one's name and SHA-256, sorted): the same
    weights give the same digest, whatever the tokenizer files or the folder's path."""
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    listing = "".join(f"{path.name} {sha256_file(path)}\n" for path in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def dvc_experiment_name() -> str | None:
    """The DVC experiment being run (``dvc exp run`` sets ``DVC_EXP_NAME``), or None.

    Not to be confused with ``mlflow.experiment_name``, the MLflow experiment that
    holds the runs: each DVC experiment is one run in it, named after the DVC experiment.
    """
    return os.environ.get("DVC_EXP_NAME") or None


def source_tags(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """MLflow's own tags for where a run came from: the UI's User, Source and Version columns."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    name = display_path(script.resolve(), root) if script is not None and script.is_file() else "python"
    tags = {"mlflow.source.name": name, "mlflow.source.type": "LOCAL", "mlflow.user": getpass.getuser()}
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def run_tags(sources: Sequence[TokenFolder], root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Tags that tie a run to its code, its DVC experiment and the exact data it trained on
    (``data.<dataset>.*`` for each token folder)."""
    tags = {}
    for source in sources:
        prefix = f"data.{source.name}"
        tags[f"{prefix}.tokens.manifest_sha256"] = source.manifest_sha256
        for split, entry in source.manifest.splits.items():
            tags[f"{prefix}.tokens.{split}_sha256"] = entry.sha256
        source_manifest = source.manifest.source.files.get(MANIFEST)
        if source_manifest:
            tags[f"{prefix}.export.manifest_sha256"] = source_manifest
        dvc_md5 = locked_out_md5(source.path, root)
        if dvc_md5:
            tags[f"dvc.tokenized.{source.name}.md5"] = dvc_md5  # as ``dvc.lock`` has it for this folder
    tags.update(source_tags(root))
    if dvc_experiment_name():
        tags[EXP_NAME_TAG] = dvc_experiment_name()
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if baseline:
        tags["dvc.baseline_rev"] = baseline
    return tags


def locked_out_md5(out: Path, root: Path = PROJECT_ROOT) -> str | None:
    """The md5 that ``dvc.lock`` records for the stage output at ``out``, if any."""
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    wanted = display_path(out, root)
    for stage in (lock.get("stages") or {}).values():
        for entry in stage.get("outs") or []:
            if entry.get("path") == wanted and entry.get("md5"):
                return str(entry["md5"])
    return None
