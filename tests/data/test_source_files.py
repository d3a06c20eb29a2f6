"""Which line of which local file is bad: found in blocks, with the line a user's editor shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.data import source_files
from src.data.source_files import BadLine, find_unreadable_line


@pytest.fixture(autouse=True)
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 7 bytes: characters, lines and JSON rows all cross block boundaries."""
    monkeypatch.setattr(source_files, "_BLOCK_BYTES", 7)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_the_first_undecodable_byte_is_named_with_its_line(tmp_path: Path) -> None:
    text = write(tmp_path, "a.txt", "héllo\nwörld\nok\n".encode() + b"bad \xff here\nmore\n")
    assert find_unreadable_line([text], "text") == BadLine(text, 4, "is not valid utf-8 (byte 0xff)")
    cut = write(tmp_path, "b.txt", "abcdeé".encode() + b"\n\xfe\n")  # é split between two blocks
    assert find_unreadable_line([cut], "text") == BadLine(cut, 2, "is not valid utf-8 (byte 0xfe)")
    truncated = write(tmp_path, "c.txt", b"abcde\xc3")  # a character cut off at the end of the file
    assert find_unreadable_line([truncated], "text") == BadLine(
        truncated, 1, "is not valid utf-8 (byte 0xc3)"
    )
    fine = write(tmp_path, "d.txt", "ünïcödé\n".encode() * 10)
    assert find_unreadable_line([fine, text], "text") == BadLine(text, 4, "is not valid utf-8 (byte 0xff)")
    assert find_unreadable_line([text], "text", encoding="no-such-codec") is None  # datasets names it


def test_json_lines_without_the_text_column_or_not_json_are_named(tmp_path: Path) -> None:
    rows = write(tmp_path, "a.jsonl", b'{"text": "a"}\n{"text": "b\xc3\xa9"}\n\n{"x": 1}\n')
    assert find_unreadable_line([rows], "json", text_column="text") == BadLine(
        rows, 4, "has no text in 'text'"
    )
    cut = write(tmp_path, "b.jsonl", b'{"text": "a"}\n{"text": "b"')
    assert find_unreadable_line([cut], "json", text_column="text") == BadLine(cut, 2, "is not valid JSON")
    last = write(tmp_path, "c.jsonl", b'{"text": "a"}\n{"text": "b"}')  # no newline at the end
    assert find_unreadable_line([last], "json", text_column="text") is None
    array = write(tmp_path, "d.json", b'[{"text": "a"},\n{"text": "b"}]')  # one JSON array: read whole
    assert find_unreadable_line([array], "json", text_column="text") is None


def test_links_out_of_the_folder_are_refused_and_links_inside_kept(tmp_path: Path) -> None:
    from src.data.source_files import check_links_stay_inside
    from src.errors import ConfigError

    folder, outside = tmp_path / "corpus", tmp_path / "elsewhere"
    (folder / "sub").mkdir(parents=True)
    outside.mkdir()
    write(folder, "a.txt", b"a\n")
    write(outside, "o.txt", b"o\n")
    (folder / "b.txt").symlink_to("a.txt")
    (folder / "sub" / "up.txt").symlink_to("../a.txt")
    (folder / "same").symlink_to(folder / "sub", target_is_directory=True)
    (folder / "dangling.txt").symlink_to("missing.txt")  # inside, if missing: "not found" when named
    check_links_stay_inside("k", folder)
    for name, target in (("sub/o.txt", outside / "o.txt"), ("out", outside), ("up", tmp_path)):
        link = folder / name
        link.symlink_to(target)
        refused = rf"^k: {link} is a link to the (file|folder) {target}, outside the folder"
        with pytest.raises(ConfigError, match=refused):
            check_links_stay_inside("k", folder)
        link.unlink()
    (folder / "dotdot.txt").symlink_to("../elsewhere/o.txt")  # relative, but out
    with pytest.raises(ConfigError, match=r"dotdot.txt is a link to the file .*elsewhere/o.txt, outside"):
        check_links_stay_inside("k", folder)
