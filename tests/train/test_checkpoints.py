"""Checkpoints: atomic, pruned to the newest K, resumed only with the same settings and tokens."""

from __future__ import annotations

from pathlib import Path

from src.train.checkpoints import (
    find_resumable,
    list_checkpoints,
    run_fingerprint,
    save_checkpoint,
    shaping_settings,
)

SETTINGS = {"train.lr": "0.003", "train.seed": "0", "train.resume": "auto"}


INPUTS = {"tokenized data": "t1", "code": "c1"}


def state(step: int, settings: dict[str, str] = SETTINGS, inputs: dict[str, str] = INPUTS) -> dict:
    return {
        "step": step,
        "fingerprint": run_fingerprint(settings, inputs),
        "settings": shaping_settings(settings),
        "inputs": inputs,
    }


def test_newest_k_are_kept_and_the_newest_resumes(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, state(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000020.ckpt", "step-000000030.ckpt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    resumed, reason = find_resumable(tmp_path, SETTINGS, INPUTS)
    assert resumed["step"] == 30 and "step 30" in reason
    operational = {**SETTINGS, "train.resume": "never"}  # does not change the numbers
    assert find_resumable(tmp_path, operational, INPUTS)[0]["step"] == 30


def test_other_settings_start_afresh_and_say_what_changed(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 10, state(10), keep=2)
    resumed, reason = find_resumable(tmp_path, {**SETTINGS, "train.lr": "0.001"}, {**INPUTS, "code": "c2"})
    assert resumed is None
    assert "train.lr: 0.003 -> 0.001" in reason and "the code" in reason and "tokenized" not in reason


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path: Path) -> None:
    for step in (10, 20):
        save_checkpoint(tmp_path, step, state(step), keep=2)
    (tmp_path / "step-000000020.ckpt").write_bytes(b"not a checkpoint")
    resumed, _ = find_resumable(tmp_path, SETTINGS, INPUTS)
    assert resumed["step"] == 10
