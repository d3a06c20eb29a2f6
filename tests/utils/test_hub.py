"""Hub names and project folders: a folder that is not there is never reported as a Hub miss."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.errors import ConfigError
from src.utils.hub import check_folder_exists, from_folder_or_hub, looks_like_path


def test_only_values_that_cannot_be_hub_ids_count_as_paths(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for value in ("./tok", "../tok", "/abs/tok", "a/b/c", "data/tok"):
        assert looks_like_path(value, tmp_path), value
    for value in ("gpt2", "openai-community/gpt2", "tok"):
        assert not looks_like_path(value, tmp_path), value


def test_a_missing_folder_is_named_before_any_hub_probe(tmp_path: Path) -> None:
    def load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loader must not be called")

    with pytest.raises(ConfigError, match=r"^tokenize.tokenizer: folder .*tok does not exist; fix the path"):
        from_folder_or_hub(
            load, "./tok", key="tokenize.tokenizer", cache_dir=tmp_path, timeout_s=0.1, root=tmp_path
        )
    with pytest.raises(ConfigError, match=r"^model.pretrained: folder .*mine does not exist"):
        check_folder_exists("./models/mine", key="model.pretrained", root=tmp_path)
    check_folder_exists("gpt2", key="model.pretrained", root=tmp_path)  # a Hub id: checked when loaded


def test_a_folder_without_loadable_files_is_one_line(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "README").write_text("nothing to load\n")
    with pytest.raises(
        ConfigError, match=r"^tokenize.tokenizer: folder .*tok holds nothing AutoTokenizer can"
    ):
        from_folder_or_hub(
            AutoTokenizer.from_pretrained,
            "tok",
            key="tokenize.tokenizer",
            cache_dir=tmp_path / "cache",
            timeout_s=0.1,
            root=tmp_path,
        )
