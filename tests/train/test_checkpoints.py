"""Checkpoints: atomic, pruned to the newest K, resumed only with the same settings, inputs and code."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from src.config import Params, load_params
from src.errors import PipelineError
from src.train.checkpoints import (
    CHECKPOINT_VERSION,
    OPERATIONAL_KEYS,
    CheckpointState,
    code_fingerprint,
    describe_change,
    find_resumable,
    list_checkpoints,
    newest_readable,
    read_state,
    rng_states,
    run_fingerprint,
    save_checkpoint,
    shaping_settings,
    write_state,
)
from src.train.history import History
from src.utils.files import sha256_file
from src.utils.flatten import flatten
from src.utils.typed_config import as_plain_dict

NONE_VERIFIES = "no checkpoint that verifies: starting afresh"
#: Shaping settings (:func:`shaping_settings` of some params), as a checkpoint and the fingerprint hold them.
SETTINGS = {"train.lr": "0.003", "train.seed": "0"}
INPUTS = {"tokenized data": "t1", "code": "c1"}


def state(step: int, settings: dict[str, str] = SETTINGS, inputs: dict[str, str] = INPUTS) -> CheckpointState:
    history = History(
        train=[{"step": step, "train_loss": 2.0, "lr": 0.1, "tokens_per_s": 9.0}], tokens_seen=step
    )
    return CheckpointState(
        fingerprint=run_fingerprint(settings, inputs),
        settings=settings,
        inputs=inputs,
        step=step,
        model={"w": torch.full((2, 2), float(step))},
        optimizer={"state": {}, "param_groups": [{"lr": 0.1}]},
        scheduler={"last_epoch": step},
        rng=rng_states(),
        history=history,
        mlflow_run_id="run-1",
    )


def test_state_round_trips_through_a_file(tmp_path: Path) -> None:
    original = state(30)
    write_state(tmp_path / "s.ckpt", original)
    loaded = read_state(tmp_path / "s.ckpt")
    assert isinstance(loaded.history, History) and loaded.history == original.history
    assert torch.equal(loaded.model["w"], original.model["w"])
    assert torch.equal(loaded.rng["torch"], original.rng["torch"])
    same = ("fingerprint", "settings", "inputs", "step", "optimizer", "scheduler", "mlflow_run_id", "version")
    assert {k: getattr(loaded, k) for k in same} == {k: getattr(original, k) for k in same}
    assert loaded.version == CHECKPOINT_VERSION
    assert CheckpointState.from_dict(original.to_dict()).history == original.history


def test_a_checkpoint_of_another_version_is_not_read(tmp_path: Path) -> None:
    old = {**state(10).to_dict(), "version": CHECKPOINT_VERSION - 1}
    with pytest.raises(ValueError, match=rf"^checkpoint format {CHECKPOINT_VERSION - 1}, this version reads"):
        CheckpointState.from_dict(old)
    torch.save(old, tmp_path / "step-000000020.ckpt")
    save_checkpoint(tmp_path, 10, state(10), keep=5)
    path, found = newest_readable(list_checkpoints(tmp_path))
    assert (path.name, found.step) == ("step-000000010.ckpt", 10)


def test_newest_k_are_kept_and_the_newest_resumes(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, state(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000020.ckpt", "step-000000030.ckpt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    resumed, reason = find_resumable(tmp_path, SETTINGS, INPUTS)
    assert resumed is not None and resumed.step == 30 and "step 30" in reason
    assert torch.equal(resumed.model["w"], torch.full((2, 2), 30.0))


def test_a_checkpoint_of_other_settings_in_the_folder_is_refused_and_kept(tmp_path: Path) -> None:
    """Each configuration has its own folder, so one of other settings there was put there by hand
    (a checkpoint of another model copied in): one line saying what differs, and the file stays."""
    assert find_resumable(tmp_path, SETTINGS, INPUTS) == (None, "no checkpoint yet")
    save_checkpoint(tmp_path, 10, state(10), keep=2)
    with pytest.raises(PipelineError) as caught:
        find_resumable(tmp_path, {**SETTINGS, "train.lr": "0.001"}, {**INPUTS, "code": "c2"})
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'step-000000010.ckpt'}: made by another configuration (")
    assert "train.lr: 0.003 -> 0.001" in message and "the code" in message and "tokenized" not in message
    assert message.endswith("move it out (or set train.resume: never to start afresh here)")
    assert (tmp_path / "step-000000010.ckpt").exists()


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path: Path) -> None:
    for step in (10, 20):
        save_checkpoint(tmp_path, step, state(step), keep=2)
    (tmp_path / "step-000000020.ckpt").write_bytes(b"not a checkpoint")
    resumed, _ = find_resumable(tmp_path, SETTINGS, INPUTS)
    assert resumed is not None and resumed.step == 10
    (tmp_path / "step-000000010.ckpt").write_bytes(b"")
    assert find_resumable(tmp_path, SETTINGS, INPUTS) == (
        None,
        "no checkpoint that verifies: starting afresh",
    )


def flip_bytes(path: Path, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of ``path``, its size unchanged (as storage rot does)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(b ^ 0xFF for b in data[middle : middle + count])
    path.write_bytes(bytes(data))


def test_a_checkpoint_whose_bytes_changed_is_never_resumed(tmp_path: Path, caplog) -> None:
    """Flipped bytes that still unpickle (the middle of a weight tensor) are caught by the digest."""
    for step in (10, 20):
        save_checkpoint(tmp_path, step, state(step), keep=2)
    newest = tmp_path / "step-000000020.ckpt"
    assert (tmp_path / "step-000000020.ckpt.sha256").read_text().split()[0] == sha256_file(newest)
    flip_bytes(newest)
    with caplog.at_level("WARNING"):
        resumed, reason = find_resumable(tmp_path, SETTINGS, INPUTS)
    assert resumed is not None and resumed.step == 10, reason
    assert f"{newest} is not resumed: its bytes do not match step-000000020.ckpt.sha256" in caplog.text
    (tmp_path / "step-000000010.ckpt.sha256").unlink()  # a write cut short before its digest
    assert find_resumable(tmp_path, SETTINGS, INPUTS) == (
        None,
        "no checkpoint that verifies: starting afresh",
    )


def test_pruning_removes_digests_with_their_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "step-000000005.ckpt.sha256").write_text("0" * 64 + "\n")  # its checkpoint never landed
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, state(step), keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000000020.ckpt",
        "step-000000020.ckpt.sha256",
        "step-000000030.ckpt",
        "step-000000030.ckpt.sha256",
    ]


def test_code_fingerprint_hashes_the_given_files(tmp_path: Path) -> None:
    for name, text in {"a.py": "x = 1\n", "pkg/b.py": "y = 2\n", "c.py": "z = 3\n"}.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    fingerprint = code_fingerprint(["pkg/b.py", "a.py"], tmp_path)
    assert fingerprint == code_fingerprint(["a.py", "pkg/b.py"], tmp_path)  # order does not matter
    (tmp_path / "c.py").write_text("z = 4\n")  # not listed
    assert code_fingerprint(["a.py", "pkg/b.py"], tmp_path) == fingerprint
    (tmp_path / "pkg" / "b.py").write_text("y = 3\n")
    assert code_fingerprint(["a.py", "pkg/b.py"], tmp_path) != fingerprint
    assert code_fingerprint(["a.py"], tmp_path) != code_fingerprint(["a.py", "c.py"], tmp_path)


def test_an_edit_that_cannot_change_numbers_keeps_a_checkpoint_resumable(tmp_path: Path) -> None:
    """The train stage's own files, copied: a docstring, a comment or the formatting of one does
    not change the fingerprint a checkpoint is resumed under; a changed constant does."""
    import shutil

    from src.paths import PROJECT_ROOT
    from src.train.run_inputs import TRAIN_STAGE
    from src.utils.import_graph import code_dependencies

    files = code_dependencies(TRAIN_STAGE)
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    before = code_fingerprint(files, tmp_path)
    tracking = tmp_path / "src" / "train" / "tracking.py"
    text = tracking.read_text()
    edited = text.replace('"""MLflow tracking:', '"""MLflow tracking, reworded:', 1)  # the docstring
    edited = edited.replace("\n\n\n", "\n\n\n# a new comment\n", 1).replace("):\n", "):  # noted\n", 1)
    tracking.write_text(edited)
    assert edited != text and code_fingerprint(files, tmp_path) == before
    loss = tmp_path / "src" / "models" / "causal_lm.py"
    code = loss.read_text()
    number = re.search(r"(?<![\w.])(\d+\.\d+)(?![\w.])", code)
    assert number, "no float constant to change"
    loss.write_text(code[: number.start()] + str(float(number.group(1)) + 1) + code[number.end() :])
    assert code_fingerprint(files, tmp_path) != before


def params_with(**sections: dict[str, Any]) -> Params:
    """The project's params with some fields of some sections changed (``train={"lr": 1e-3}``)."""
    params = load_params()
    changes = {name: dataclasses.replace(getattr(params, name), **edits) for name, edits in sections.items()}
    return dataclasses.replace(params, **changes)


def test_the_operational_settings_do_not_shape_a_run() -> None:
    shaped = shaping_settings(load_params())
    for operational in ({"train": {"resume": "never"}}, {"mlflow": {"experiment_name": "other"}}):
        assert shaping_settings(params_with(**operational)) == shaped
    assert shaping_settings(params_with(train={"seed": 1})) != shaped
    assert set(OPERATIONAL_KEYS) <= set(flatten(as_plain_dict(load_params())))  # each names a setting
    assert run_fingerprint({**SETTINGS, "train.seed": "1"}, INPUTS) != run_fingerprint(SETTINGS, INPUTS)
    assert run_fingerprint(SETTINGS, {**INPUTS, "tokenized data": "t2"}) != run_fingerprint(SETTINGS, INPUTS)


def test_a_planted_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    """Checkpoints load with ``weights_only``: a file whose pickle would run a command is refused."""
    import os

    from src.train.checkpoints import UnsafeCheckpointError

    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, 10, state(10), keep=2)
    planted = folder / "step-000000999.ckpt"
    torch.save({"step": 999, "model": Planted()}, planted)
    # Without a digest it is skipped unread; with one forged beside it, weights_only still refuses it.
    assert find_resumable(folder, SETTINGS, INPUTS)[0].step == 10
    (folder / "step-000000999.ckpt.sha256").write_text(f"{sha256_file(planted)}  {planted.name}\n")
    with pytest.raises(UnsafeCheckpointError) as caught:
        find_resumable(folder, SETTINGS, INPUTS)
    assert str(caught.value) == (
        f"{folder / 'step-000000999.ckpt'}: refused, it holds objects other than tensors and plain data "
        "(loading it could run code); delete it if you did not write it"
    )
    assert not marker.exists()
    assert (folder / "step-000000999.ckpt").exists() and (folder / "step-000000010.ckpt").exists()


def test_rng_states_restore_every_generator(tmp_path: Path) -> None:
    import random

    import numpy as np

    from src.train.checkpoints import restore_rng_states

    write_state(tmp_path / "s.ckpt", state(1))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_states(read_state(tmp_path / "s.ckpt").rng)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_configurations_are_pruned_newest_first_and_loose_files_go(tmp_path: Path) -> None:
    import os

    from src.train.checkpoints import configuration_folder, prune_configurations

    folders = [configuration_folder(tmp_path, str(i) * 64) for i in range(4)]
    for age, folder in enumerate(folders):
        save_checkpoint(folder, 10, state(10), keep=2)
        os.utime(folder, ns=(age * 10**9, age * 10**9))  # folders[3] is the newest
    save_checkpoint(tmp_path, 10, state(10), keep=2)  # the layout of an older version: loose files
    removed = prune_configurations(tmp_path, current=folders[0], keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folders[0].name, folders[3].name])
    assert set(removed) == {
        folders[1],
        folders[2],
        tmp_path / "step-000000010.ckpt",
        tmp_path / "step-000000010.ckpt.sha256",
    }


def test_a_fresh_run_replaces_the_later_checkpoints_of_an_earlier_one(tmp_path: Path) -> None:
    """With train.resume: never, the new run's checkpoints win over the old run's later steps."""
    for step in (50, 60):
        save_checkpoint(tmp_path, step, state(step), keep=2)
    save_checkpoint(tmp_path, 10, state(10), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000010.ckpt"]
    save_checkpoint(tmp_path, 20, state(20), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000010.ckpt", "step-000000020.ckpt"]


def test_a_checkpoint_resumes_under_any_split_of_the_same_global_batch() -> None:
    """batch_size x accumulate_grad_batches x Ray workers: only the product shapes the run."""

    def settings(batch: int, accumulate: int, workers: int, use_ray: bool = True) -> dict[str, str]:
        return shaping_settings(
            params_with(
                train={"batch_size": batch, "accumulate_grad_batches": accumulate},
                ray={"num_workers": workers, "use_ray": use_ray},
            )
        )

    two_workers = run_fingerprint(settings(2, 1, 2), INPUTS)
    assert run_fingerprint(settings(4, 1, 1), INPUTS) == two_workers
    assert run_fingerprint(settings(1, 2, 2), INPUTS) == two_workers
    assert run_fingerprint(settings(2, 1, 1), INPUTS) != two_workers  # a global batch of 2
    # Without Ray, ray.num_workers trains nothing: one process holds the whole batch.
    assert run_fingerprint(settings(4, 1, 8, use_ray=False), INPUTS) != run_fingerprint(
        settings(4, 1, 8), INPUTS
    )
    assert settings(4, 1, 8, use_ray=False)["train.global_batch"] == "4"
    written = state(10, settings(2, 1, 2))
    assert describe_change(written, settings(2, 1, 1), INPUTS) == "train.global_batch: 4 -> 2"
