"""params.yaml is read as DVC reads it (YAML 1.2 numbers and booleans, no duplicate keys)."""

from __future__ import annotations

import pytest
import yaml

from src.utils.yaml_loader import DuplicateKeyError, load_yaml


def test_numbers_without_a_dot_in_the_exponent_are_floats() -> None:
    data = load_yaml("a: 1e-3\nb: 3.0e-3\nc: -2E+2\nd: .inf\ne: 5\nf: '1e-3'\n")
    assert data == {"a": 0.001, "b": 0.003, "c": -200.0, "d": float("inf"), "e": 5, "f": "1e-3"}
    assert isinstance(data["e"], int)
    assert yaml.safe_load("a: 1e-3") == {"a": "1e-3"}  # what PyYAML alone would have given


def test_only_true_and_false_are_booleans() -> None:
    assert load_yaml("a: true\nb: False\nc: yes\nd: off\n") == {"a": True, "b": False, "c": "yes", "d": "off"}


def test_duplicate_keys_are_refused_with_their_line() -> None:
    with pytest.raises(DuplicateKeyError) as caught:
        load_yaml("train:\n  lr: 0.1\n  seed: 1\n  lr: 0.2\n")
    assert caught.value.problem == "duplicate key 'lr' (DVC refuses the file; keep one)"
    assert caught.value.problem_mark.line + 1 == 4
    assert load_yaml("a: {x: 1}\nb: {x: 2}\n") == {"a": {"x": 1}, "b": {"x": 2}}  # same key, other mapping
