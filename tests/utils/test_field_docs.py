"""The parameters reference is generated from src/config/: every setting is in it, documented."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from src.config import DatasetSpec, Params
from src.paths import PROJECT_ROOT
from src.utils.field_docs import field_docs, reference_markdown
from src.utils.typed_config import setting


@dataclass(frozen=True)
class Example:
    """An example section."""

    rate: float = setting(0.5, within="(0, 1)")
    """How fast, in ``units`` | per step."""
    name: str = "x"
    undocumented: int = 0


def test_a_field_docstring_is_the_string_after_the_field() -> None:
    assert field_docs(Example) == {"rate": "How fast, in `units` | per step."}


def test_a_row_gives_the_type_default_range_and_docstring() -> None:
    @dataclass(frozen=True)
    class Root:
        example: Example = dataclasses.field(default_factory=Example)
        """The example."""

    text = reference_markdown(Root)
    assert "## `example`\n\nThe example." in text
    assert "| `example.rate` | `float` | `0.5` | `(0, 1)` | How fast, in `units` \\| per step. |" in text
    assert "| `example.undocumented` | `int` | `0` |  |  |" in text


def test_every_setting_of_params_yaml_is_documented_in_the_reference() -> None:
    text = reference_markdown(Params)
    for section, cls in typing.get_type_hints(Params).items():
        docs = field_docs(cls)
        for field in dataclasses.fields(cls):
            assert field.name in docs, f"{section}.{field.name} has no docstring"
            assert f"`{section}.{field.name}`" in text
    for field in dataclasses.fields(DatasetSpec):
        assert field.name in field_docs(DatasetSpec), f"DatasetSpec.{field.name} has no docstring"
        assert f"`download.datasets.<name>.{field.name}`" in text
        assert f"`download.local.<name>.{field.name}`" in text
    assert len(text) > 10_000  # tables, not headings alone


def test_the_docs_parameters_page_is_the_generated_reference() -> None:
    from docs.hooks.parameters import MARKER, on_page_markdown

    page = (PROJECT_ROOT / "docs" / "parameters.md").read_text()
    assert MARKER in page
    assert reference_markdown(Params, heading="###") in on_page_markdown(page, None, None, None)
