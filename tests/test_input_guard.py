"""A stage refuses to end when the params DVC records for it, or its dep files, changed while it ran."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from src.config import load_params
from src.data.stage_inputs import download_inputs, tokenize_inputs
from src.errors import PipelineError
from src.input_guard import StageInputs, unchanged_inputs


def edit(params_file: Path, section: str, name: str, value: object) -> None:
    data = yaml.safe_load(params_file.read_text())
    data[section][name] = value
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_change_outside_the_stages_params_and_deps_is_no_change(make_params, tmp_path: Path) -> None:
    params_file = make_params(tmp_path)
    params = load_params(params_file)
    with unchanged_inputs(tokenize_inputs(params, "kjv"), params, params_file):
        edit(params_file, "train", "lr", 0.5)  # not a param of tokenize@kjv


def test_a_changed_param_names_its_key_and_old_and_new_values(make_params, tmp_path: Path) -> None:
    params_file = make_params(tmp_path)
    params = load_params(params_file)
    with (
        pytest.raises(
            PipelineError,
            match=r"^the tokenize@kjv stage's inputs changed while it ran "
            r"\(model.trust_remote_code: False -> True\): ",
        ),
        unchanged_inputs(tokenize_inputs(params, "kjv"), params, params_file),
    ):
        edit(params_file, "model", "trust_remote_code", True)


def test_a_file_edited_or_added_in_a_dep_folder_is_a_change(tmp_path: Path, make_params) -> None:
    """``download.local``'s folder is a dep: a file written into it meanwhile would be hashed by DVC
    into the record of an export made without it."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("one")
    params_file = make_params(tmp_path / "run")
    data = yaml.safe_load(params_file.read_text())
    data["download"]["local"] = {"notes": {"path": "text", "data_dir": str(folder)}}
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    params = load_params(params_file)
    inputs = download_inputs(params, "notes")
    assert (inputs.stage, inputs.params) == ("download_local@notes", ("download.local.notes",))
    with (
        pytest.raises(PipelineError, match=r"notes/b.txt\): "),
        unchanged_inputs(inputs, params, params_file),
    ):
        (folder / "b.txt").write_text("two")
    with (
        pytest.raises(PipelineError, match=r"notes/a.txt\): "),
        unchanged_inputs(inputs, params, params_file),
    ):
        stat = (folder / "a.txt").stat()
        os.utime(folder / "a.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))


def test_a_failing_stage_reports_its_own_error_not_the_guards(make_params, tmp_path: Path) -> None:
    params_file = make_params(tmp_path)
    params = load_params(params_file)
    inputs = StageInputs("demo", ("train",), lambda: [])
    with pytest.raises(ValueError, match="its own"), unchanged_inputs(inputs, params, params_file):
        edit(params_file, "train", "lr", 0.5)
        raise ValueError("its own")
