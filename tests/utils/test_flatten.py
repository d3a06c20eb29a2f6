"""Nested settings as dotted keys, every value a string (as MLflow params are)."""

from __future__ import annotations

from src.utils.flatten import flatten


def test_nested_mappings_become_dotted_keys_and_values_strings() -> None:
    data = {"train": {"lr": 0.003, "mixture": {"kjv": 1}}, "ray": {"use_ray": False}, "top": [1, 2]}
    assert flatten(data) == {
        "train.lr": "0.003",
        "train.mixture.kjv": "1",
        "ray.use_ray": "False",
        "top": "[1, 2]",
    }
    assert flatten({}) == {}
