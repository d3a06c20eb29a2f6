"""Read ``params.yaml`` as DVC reads it, so the pipeline and ``dvc`` never disagree about a value.

DVC parses YAML 1.2 (ruamel); PyYAML implements YAML 1.1. Three differences
matter for params: YAML 1.1 reads ``1e-3`` as a string (it wants a dot,
``1.0e-3``) where DVC and people read a number; it reads ``yes``/``no``/``on``/
``off`` as booleans where YAML 1.2 has only ``true``/``false``; and PyYAML keeps
the last of two equal keys silently where DVC refuses the file. This loader
reads numbers and booleans as YAML 1.2 does and refuses duplicate keys, naming
the line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

#: YAML 1.2's float: the exponent needs no dot (``1e-3``, ``5E+2``), plus .inf/.nan.
_FLOAT_1_2 = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class DuplicateKeyError(yaml.MarkedYAMLError):
    """The same key twice in one mapping."""


class ParamsLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 floats and no duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKeyError(
                    problem=f"duplicate key {key!r} (DVC refuses the file; keep one)",
                    problem_mark=key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_FLOAT, _BOOL = "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"
ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_FLOAT, _BOOL)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# Appended after PyYAML's int resolver, so an integer-looking value stays an int.
ParamsLoader.add_implicit_resolver(_FLOAT, _FLOAT_1_2, list("-+0123456789."))
ParamsLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml(text: str) -> Any:
    """Parse ``text`` with :class:`ParamsLoader`."""
    return yaml.load(text, Loader=ParamsLoader)  # a SafeLoader: builds plain data only, runs nothing
