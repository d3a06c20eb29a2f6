"""Build frozen dataclasses from plain YAML data, rejecting anything unexpected.

``params.yaml`` is edited by hand and by ``dvc exp run -S key=value`` (which
writes whatever string it was given), so every value is checked against the
field's type annotation and declared range before any work starts. Errors name
the full key path (``download.datasets.kjv.validation_fraction``) so the user
knows exactly which line to fix.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

from src.errors import ConfigError, FieldError

T = TypeVar("T")

_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s\])]+)\s*([\])])\s*$")


@dataclass(frozen=True)
class Interval:
    """A numeric range written as in maths: ``(0, 1)``, ``[1, inf)``."""

    low: float
    high: float
    low_open: bool
    high_open: bool
    text: str

    @classmethod
    def parse(cls, text: str) -> Interval:
        match = _INTERVAL.match(text)
        if not match:
            raise ValueError(f"not an interval: {text!r}")
        left, low, high, right = match.groups()
        return cls(float(low), float(high), left == "(", right == ")", text)

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


def setting(default: Any = dataclasses.MISSING, *, within: str | None = None) -> Any:
    """A dataclass field with an optional allowed range, e.g. ``setting(0.1, within="(0, 1)")``."""
    metadata = {"within": Interval.parse(within)} if within else {}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def build(cls: type[T], data: Any, where: str) -> T:
    """Create dataclass ``cls`` from ``data``; ``where`` is the key path used in errors."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        expected = ", ".join(fields) or "no settings"
        raise ConfigError(f"{_join(where, unknown[0])}: unknown key (expected one of: {expected})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        key = _join(where, name)
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing required setting")
            continue
        values[name] = convert(hints[name], data[name], key, field.metadata.get("within"))
    try:
        return cls(**values)
    except FieldError as error:
        raise ConfigError(f"{_join(where, error.field)}: {error.message}") from None


def convert(hint: Any, value: Any, key: str, within: Interval | None = None) -> Any:
    """Check ``value`` against type ``hint`` (and range ``within``) and return it normalised."""
    try:
        return _convert(hint, value, key, within)
    except _Mismatch:
        raise ConfigError(f"{key}: expected {describe(hint, within)}, got {_show(value)}") from None


class _Mismatch(Exception):
    """The value does not fit the hint; ``convert`` turns it into a message."""


def _convert(hint: Any, value: Any, key: str, within: Interval | None) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _convert(arm, value, key, within)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise _Mismatch
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _Mismatch
        return tuple(_convert(args[0], item, f"{key}[{i}]", within) for i, item in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _Mismatch
        return {k: convert(args[1], v, _join(key, k), within) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Mismatch
        if hint is int and not isinstance(value, int):
            raise _Mismatch
        if not math.isfinite(value) or (within is not None and value not in within):
            raise _Mismatch
        return hint(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"{key}: unsupported type annotation {hint!r}")


def describe(hint: Any, within: Interval | None = None) -> str:
    """Plain-English name of a type hint, as used in error messages."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        arms = [describe(a, within) for a in args if a is not type(None)]
        text = " or ".join(arms)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if dataclasses.is_dataclass(hint):
        return "a mapping of settings"
    if origin in (list, tuple):
        return f"a list of {_plural(describe(args[0]))}"
    if origin in (dict, Mapping):
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    name = names.get(hint, getattr(hint, "__name__", str(hint)))
    return f"{name} in {within.text}" if within is not None and hint in (int, float) else name


def as_plain_dict(config: Any) -> dict[str, Any]:
    """The config as YAML-able data (tuples become lists), e.g. to send to a worker."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def _plural(text: str) -> str:
    return re.sub(r"^an? ", "", text) + "s" if text.startswith(("a ", "an ")) else text


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _show(value: Any) -> str:
    return "nothing" if value is None else repr(value)
