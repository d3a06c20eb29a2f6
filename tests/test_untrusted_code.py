"""Code shipped with a tokenizer folder runs only under ``model.trust_remote_code: true``.

A folder whose ``tokenizer_config.json`` has an ``auto_map`` names a Python class in a ``.py``
beside it; loading it imports that module. The stages are run as a user runs them, in a project of
their own, with ``y`` typed at any question (as ``yes | python -m stages.tokenizer`` would): the
answer must never be asked for, and the code never run or copied, unless the switch is on.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from src.paths import PROJECT_ROOT

#: What ``yes`` would type, far more lines than any prompt could read.
YES = "y\n" * 10_000

SOURCE = "custom_tokenizer"


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture
def project(make_params, custom_code_tokenizer, tiny_export: Path, tmp_path: Path) -> SimpleNamespace:
    """A project of its own (the code, ``params.yaml``, the tiny export) whose ``tokenize.tokenizer``
    is a folder with code; the marker its code writes lives outside the project."""
    from src.data.encoding import iter_documents

    root = tmp_path / "project"
    params_file = make_params(root, data="export")
    for folder in ("src", "stages"):
        shutil.copytree(PROJECT_ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    marker = tmp_path / "outside" / f"ran-{tmp_path.name}"
    marker.parent.mkdir()
    texts = list(iter_documents(tiny_export / "train.jsonl"))
    tokenizer = custom_code_tokenizer(root / SOURCE, texts, marker)
    params = yaml.safe_load(params_file.read_text())
    params["tokenize"]["tokenizer"] = SOURCE
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    made = root / "main_cache" / "tokenized" / SOURCE / "tokenizer"
    return SimpleNamespace(root=root, params_file=params_file, marker=marker, tokenizer=tokenizer, made=made)


def set_trust(project: SimpleNamespace, trust: bool) -> None:
    params = yaml.safe_load(project.params_file.read_text())
    params["model"]["trust_remote_code"] = trust
    project.params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(project: SimpleNamespace, tool_env, *args: str) -> subprocess.CompletedProcess:
    """``yes | python -m stages.<args>`` in the project; Hugging Face's caches (where transformers
    copies a module it imports) inside the project, so a copy of the code there would be found."""
    environment = tool_env({"HF_HOME": str(project.root / "model_cache"), "HF_HUB_OFFLINE": "1"})
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=project.root,
        env=environment,
        input=YES,
        capture_output=True,
        text=True,
        timeout=600,
    )


def files_holding(root: Path, text: str, leave_out: Path) -> list[str]:
    """Files under ``root`` (but not under ``leave_out``) whose bytes contain ``text``."""
    needle = text.encode()
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and leave_out not in path.parents and needle in path.read_bytes()
    )


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_tokenizer_folder_with_code_is_refused_though_yes_is_typed(project, tool_env) -> None:
    set_trust(project, False)
    result = run_stage(project, tool_env, "stages.tokenizer")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    lines = error_lines(output)
    assert len(lines) == 1, output
    assert f"folder {SOURCE} holds custom code" in lines[0]
    assert "tokenization_marker.MarkerTokenizerFast" in lines[0]
    assert "set model.trust_remote_code: true if you trust it" in lines[0]
    assert "Traceback" not in output and "Do you wish to run the custom code" not in output
    assert not project.marker.exists(), "the folder's code ran"
    assert files_holding(project.root, project.tokenizer.signature, project.tokenizer.folder) == []
    assert not project.made.exists()


def test_trusted_code_runs_and_a_folder_holding_it_is_refused_once_trust_is_off(project, tool_env) -> None:
    """The switch is honoured: on, the folder's class loads (its code ran) and the tokenizer stage
    saves it, code included; off again, the tokenize stage refuses that output and leaves it as it
    is."""
    set_trust(project, True)
    result = run_stage(project, tool_env, "stages.tokenizer")
    assert result.returncode == 0, result.stdout + result.stderr
    assert project.marker.read_text() == project.tokenizer.signature
    assert (project.made / "tokenization_marker.py").read_text() == project.tokenizer.code

    project.marker.unlink()
    made = files_of(project.made)
    set_trust(project, False)
    result = run_stage(project, tool_env, "stages.tokenize", "kjv")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    lines = error_lines(output)
    assert len(lines) == 1, output
    assert f"main_cache/tokenized/{SOURCE}/tokenizer holds custom code" in lines[0]
    assert "set model.trust_remote_code: true if you trust it" in lines[0]
    assert "Traceback" not in output and "Do you wish to run the custom code" not in output
    assert not project.marker.exists(), "the saved code ran"
    assert files_of(project.made) == made
    assert not (project.made.parent / "kjv").exists()
