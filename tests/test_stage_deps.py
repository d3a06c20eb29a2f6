"""dvc.yaml lists every project module a stage can run: its deps are derived, not guessed.

If a stage imported a module that its deps do not list, an edit to that module
would leave ``dvc status`` clean and a stale output in place. The closure is read
from the source (imports inside functions included), so this test fails, and
prints the list to paste, as soon as the two differ.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from src.paths import PROJECT_ROOT
from src.train.checkpoints import code_fingerprint
from src.train.run_inputs import TRAIN_STAGE, training_code_fingerprint
from src.utils.import_graph import NO_OUTPUT_EFFECT, code_dependencies, import_closure

_CODE = ("src/", "stages/")


def stage_definitions() -> dict[str, dict]:
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def code_deps(stage: dict) -> list[str]:
    return sorted(dep for dep in stage["deps"] if dep.startswith(_CODE))


def entry_of(stage: dict) -> str:
    module = re.fullmatch(r"python -m (stages\.\w+)(?: .*)?", stage["cmd"])
    assert module, f"stage command {stage['cmd']!r} is not `python -m stages.<name> ...`"
    return module.group(1).replace(".", "/") + ".py"


@pytest.mark.parametrize(
    "name",
    ["check_params", "download", "download_local", "tokenizer", "tokenize", "train", "eval_data", "evaluate"],
)
def test_stage_code_deps_are_its_import_closure(name: str) -> None:
    stage = stage_definitions()[name]
    derived = code_dependencies(entry_of(stage))
    listed = code_deps(stage)
    paste = "\n".join(f"- {path}" for path in derived)
    assert listed == derived, f"dvc.yaml stage {name!r}: set its code deps to\n{paste}"


def test_the_text_parser_and_the_numeric_settings_are_deps() -> None:
    """The gaps that were found by hand before the deps were derived."""
    stages = stage_definitions()
    assert "src/data/raw_export.py" in code_deps(stages["tokenize"])  # parse_document_lines
    assert {"src/utils/environment.py", "src/utils/typed_config.py"} <= set(code_deps(stages["train"]))


def test_only_modules_without_effect_on_outputs_are_left_out() -> None:
    closure = import_closure(PROJECT_ROOT / "stages" / "train.py")
    assert closure - set(code_dependencies("stages/train.py")) == set(NO_OUTPUT_EFFECT) & closure
    for path in NO_OUTPUT_EFFECT:
        assert (PROJECT_ROOT / path).is_file(), f"{path} in NO_OUTPUT_EFFECT does not exist"


def test_checkpoints_are_bound_to_the_train_stage_deps() -> None:
    """Resume and DVC agree on which code matters: the fingerprint hashes exactly the listed files."""
    assert entry_of(stage_definitions()["train"]) == TRAIN_STAGE
    listed = code_deps(stage_definitions()["train"])
    assert training_code_fingerprint() == code_fingerprint(listed, PROJECT_ROOT)


def test_closure_follows_imports_inside_functions_and_packages(tmp_path: Path) -> None:
    files = {
        "stages/__init__.py": "",
        "stages/run.py": "from src.a import go\n\ndef main():\n    import src.lazy.deep\n",
        "src/__init__.py": "",
        "src/a.py": "from src.b import helper\nimport numpy\n",
        "src/b.py": "def helper():\n    from src.pkg import mod\n",
        "src/pkg/__init__.py": "",
        "src/pkg/mod.py": "",
        "src/lazy/__init__.py": "",
        "src/lazy/deep.py": "",
        "src/unused.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    closure = import_closure(tmp_path / "stages" / "run.py", tmp_path)
    assert closure == set(files) - {"src/unused.py"}
    # A module without effect on outputs (NO_OUTPUT_EFFECT) is not followed: what only it imports is
    # no dep either.
    opaque = import_closure(tmp_path / "stages" / "run.py", tmp_path, frozenset({"src/b.py"}))
    assert opaque == closure - {"src/pkg/__init__.py", "src/pkg/mod.py"}


def test_the_tokenizer_depends_on_every_setting_that_changes_its_bytes() -> None:
    """The tokenizer stage lists its settings one by one (the list of datasets must stay out: adding
    one must not make a new tokenizer), so a new setting has to be added there too."""
    from dataclasses import fields

    from src.config import TokenizeConfig

    listed = set(stage_definitions()["tokenizer"]["params"])
    no_effect = {"datasets", "num_proc"}  # the dataset list; threads (the bytes do not depend on them)
    settings = {f"tokenize.{f.name}" for f in fields(TokenizeConfig) if f.name not in no_effect}
    assert listed == settings | {"model.trust_remote_code"}  # whether a tokenizer's own code may run


def test_the_train_stage_checks_the_params_dvc_records_for_it() -> None:
    """What src/train/input_guard.py compares at the end of a run is what DVC records for train."""
    from src.train.input_guard import TRAIN_PARAMS

    assert list(TRAIN_PARAMS) == stage_definitions()["train"]["params"]


def test_the_data_stages_check_the_params_dvc_records_for_them() -> None:
    """What src/data/stage_inputs.py compares at the end of each data stage is what DVC records."""
    from src.config import load_params
    from src.data.stage_inputs import TOKENIZE_PARAMS, TOKENIZER_PARAMS, download_inputs

    stages = stage_definitions()
    params = [entry.split(" #")[0] for entry in stages["tokenizer"]["params"]]
    assert list(TOKENIZER_PARAMS) == params
    assert list(TOKENIZE_PARAMS) == stages["tokenize"]["params"]
    assert stages["download"]["params"] == ["download.datasets.${key}"]
    assert stages["download_local"]["params"] == ["download.local.${key}"]
    assert download_inputs(load_params(), "kjv").params == ("download.datasets.kjv",)


def test_the_evaluate_stages_check_the_params_dvc_records_for_them() -> None:
    """What src/evaluate/stage_inputs.py compares at the end of each evaluate stage is what DVC records,
    and every setting that changes the task data is a param of eval_data."""
    from dataclasses import fields

    from src.config import EvaluateConfig
    from src.evaluate.stage_inputs import EVAL_DATA_PARAMS, EVALUATE_PARAMS

    stages = stage_definitions()
    assert list(EVAL_DATA_PARAMS) == stages["eval_data"]["params"]
    assert list(EVALUATE_PARAMS) == stages["evaluate"]["params"]
    drawn_with = {"choices", "seed"}
    assert {f"evaluate.{name}" for name in drawn_with} == set(EVAL_DATA_PARAMS)
    assert drawn_with <= {f.name for f in fields(EvaluateConfig)}
