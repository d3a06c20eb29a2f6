"""The download step: sources, the Hugging Face cache rules, the export, the CLI."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
import yaml

from src.config import PARAMS_FILE, DatasetSpec
from src.errors import ConfigError
from src.utils.download_datasets import download_dataset, main
from src.utils.typed_config import build

SCRIPT = "src/utils/download_datasets.py"


def spec(**fields: object) -> DatasetSpec:
    return build(DatasetSpec, fields, "download.datasets.test")


def arrow_snapshot(raw: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every prepared Arrow file: unchanged means nothing was rebuilt."""
    return {
        str(p.relative_to(raw)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in raw.rglob("*.arrow")
        if "downloads" not in p.parts
    }


def export_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


@pytest.fixture
def kjv() -> DatasetSpec:
    return spec(**yaml.safe_load(PARAMS_FILE.read_text())["download"]["datasets"]["kjv"])


def test_default_corpus_exports_train_and_validation(tmp_path: Path, kjv: DatasetSpec) -> None:
    export = download_dataset("kjv", kjv, tmp_path)
    manifest = json.loads((export / "manifest.json").read_text())
    splits = manifest["splits"]
    assert set(splits) == {"train", "validation"}
    assert (
        splits["train"]["rows"] + splits["validation"]["rows"]
        == manifest["source"]["rows"]["train"]
        == 31102 + 1
    )
    assert splits["validation"]["rows"] == round(31103 * kjv.validation_fraction)
    for info in splits.values():
        data = (export / info["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
        assert data.count(b"\n") == info["rows"]
    assert read_texts(export / "train.jsonl")[0] == "In the beginning God created the heaven and the earth."
    assert list(manifest["source"]["sha256"]) == ["package://bible/data/kjv.jsonl"]


def test_local_text_and_json_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\nthird line\n")
    (tmp_path / "b.txt").write_text("held out line\n")
    text = spec(
        path="text", data_files={"train": str(tmp_path / "a.txt"), "validation": str(tmp_path / "b.txt")}
    )
    export = download_dataset("notes", text, tmp_path / "cache")
    assert read_texts(export / "train.jsonl") == ["first line", "second line", "third line"]
    assert read_texts(export / "validation.jsonl") == ["held out line"]

    rows = [{"body": f"record {i}", "n": i} for i in range(50)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = spec(
        path="json", data_files=str(tmp_path / "r.jsonl"), text_column="body", validation_fraction=0.2
    )
    export = download_dataset("records", records, tmp_path / "cache")
    train, validation = read_texts(export / "train.jsonl"), read_texts(export / "validation.jsonl")
    assert len(validation) == 10 and sorted(train + validation) == sorted(r["body"] for r in rows)


def test_second_run_reuses_the_cache_and_rebuilds_nothing(tmp_path: Path, kjv: DatasetSpec) -> None:
    export = download_dataset("kjv", kjv, tmp_path)
    raw = tmp_path / "raw"
    before, first_export = arrow_snapshot(raw), export_bytes(export)
    assert before, "the first run prepares Arrow files"
    download_dataset("kjv", kjv, tmp_path)
    assert arrow_snapshot(raw) == before
    assert export_bytes(export) == first_export


def test_export_is_byte_identical_across_fresh_caches(tmp_path: Path, kjv: DatasetSpec) -> None:
    one = download_dataset("kjv", kjv, tmp_path / "one")
    two = download_dataset("kjv", kjv, tmp_path / "two")
    rebuilt = download_dataset("kjv", kjv, tmp_path / "two", force_redownload=True)
    assert export_bytes(one) == export_bytes(two) == export_bytes(rebuilt)


def test_changing_the_split_changes_the_export(tmp_path: Path, kjv: DatasetSpec) -> None:
    one = export_bytes(download_dataset("kjv", kjv, tmp_path / "a"))
    other = spec(path=kjv.path, data_files=kjv.data_files, validation_fraction=0.05)
    two = export_bytes(download_dataset("kjv", other, tmp_path / "b"))
    assert one["train.jsonl"] != two["train.jsonl"]


def test_damaged_arrow_cache_is_rebuilt(tmp_path: Path, kjv: DatasetSpec) -> None:
    export = download_dataset("kjv", kjv, tmp_path)
    good = export_bytes(export)
    (arrow,) = (tmp_path / "raw").rglob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:1000])
    download_dataset("kjv", kjv, tmp_path)
    assert export_bytes(export) == good


def served_corpus(http_server, name: str = "corpus.jsonl") -> tuple[str, bytes]:
    data = "".join(json.dumps({"text": f"remote document {i}"}) + "\n" for i in range(40)).encode()
    (http_server.folder / name).write_bytes(data)
    return http_server.url(name), data


def downloaded_copy(cache: Path, url: str) -> Path:
    (meta,) = [
        m for m in (cache / "raw" / "downloads").glob("*.json") if json.loads(m.read_text())["url"] == url
    ]
    return meta.with_suffix("")


def file_identity(path: Path) -> tuple[int, int]:
    return path.stat().st_ino, path.stat().st_mtime_ns


def test_force_redownload_fetches_and_rebuilds(tmp_path: Path, http_server) -> None:
    url, _ = served_corpus(http_server)
    remote = spec(path="json", data_files=url)
    download_dataset("remote", remote, tmp_path)
    copy, arrows = file_identity(downloaded_copy(tmp_path, url)), arrow_snapshot(tmp_path / "raw")
    download_dataset("remote", remote, tmp_path)
    assert file_identity(downloaded_copy(tmp_path, url)) == copy
    assert arrow_snapshot(tmp_path / "raw") == arrows
    download_dataset("remote", remote, tmp_path, force_redownload=True)
    assert file_identity(downloaded_copy(tmp_path, url)) != copy
    rebuilt = arrow_snapshot(tmp_path / "raw")
    assert rebuilt.keys() == arrows.keys() and all(rebuilt[k] != arrows[k] for k in arrows)


def test_corrupted_download_is_fetched_again(tmp_path: Path, http_server) -> None:
    url, data = served_corpus(http_server)
    remote = spec(path="json", data_files=url)
    export = download_dataset("remote", remote, tmp_path)
    good = export_bytes(export)
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == {url: hashlib.sha256(data).hexdigest()}
    arrows = arrow_snapshot(tmp_path / "raw")
    downloaded_copy(tmp_path, url).write_bytes(data[:100] + b"garbage")
    download_dataset("remote", remote, tmp_path)
    assert downloaded_copy(tmp_path, url).read_bytes() == data
    assert all(arrow_snapshot(tmp_path / "raw")[k] != arrows[k] for k in arrows), "the dataset is rebuilt"
    assert export_bytes(export) == good


def test_source_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"download.datasets.x.data_files: file 'missing.txt' not found"):
        download_dataset("x", spec(path="text", data_files="missing.txt"), tmp_path)
    with pytest.raises(ConfigError, match=r"package 'no_such_pkg' .* is not installed"):
        download_dataset("x", spec(path="json", data_files="package://no_such_pkg/a.jsonl"), tmp_path)
    with pytest.raises(ConfigError, match=r"download.datasets.x.data_files: required for the 'json' builder"):
        download_dataset("x", spec(path="json"), tmp_path)
    (tmp_path / "a.jsonl").write_text('{"body": "b"}\n')
    with pytest.raises(
        ConfigError, match=r"x.text_column: split 'train' has no column 'text'; choose one of: body"
    ):
        download_dataset("x", spec(path="json", data_files=str(tmp_path / "a.jsonl")), tmp_path)
    with pytest.raises(ConfigError, match=r"download.datasets.json: the name clashes"):
        download_dataset("json", spec(path="json", data_files=str(tmp_path / "a.jsonl")), tmp_path)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_hub_fails_fast_with_advice(tmp_path: Path, python_runner) -> None:
    params = yaml.safe_load(PARAMS_FILE.read_text())
    params["download"]["datasets"]["wikitext"] = {"path": "Salesforce/wikitext", "name": "wikitext-2-raw-v1"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = python_runner(
        SCRIPT,
        "--dataset",
        "wikitext",
        "--params",
        tmp_path / "params.yaml",
        "--cache-dir",
        tmp_path / "cache",
        "--log-dir",
        tmp_path,
        env={"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_HUB_OFFLINE": "0"},
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: download.datasets.wikitext: the Hugging Face Hub (http://127.0.0.1:")
    assert "is unreachable" in last and "data_files" in last
    assert "Traceback" not in result.stderr and "Retrying" not in result.stderr


def test_seed_command_and_log_numbering(tmp_path: Path, python_runner) -> None:
    for _ in range(2):
        result = python_runner(SCRIPT, "--cache-dir", tmp_path / "raw_cache", "--log-dir", tmp_path / "logs")
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
        "download_datasets_1.log",
        "download_datasets_2.log",
    ]
    assert (tmp_path / "raw_cache" / "raw" / "kjv" / "manifest.json").is_file()
    assert any((tmp_path / "raw_cache" / "raw" / "json").iterdir())  # the Hugging Face cache, seed layout
    assert "exported" in (tmp_path / "logs" / "download_datasets_2.log").read_text()


def test_datasets_to_download_comes_from_params() -> None:
    import src.utils.download_datasets as module

    assert (
        tuple(yaml.safe_load(PARAMS_FILE.read_text())["download"]["datasets"]) == module.DATASETS_TO_DOWNLOAD
    )


def test_bad_params_exit_with_one_line_and_keep_outputs(tmp_path: Path, python_runner) -> None:
    main(["--cache-dir", str(tmp_path / "cache"), "--log-dir", str(tmp_path / "logs")])
    export = tmp_path / "cache" / "raw" / "kjv"
    good = export_bytes(export)
    params = yaml.safe_load(PARAMS_FILE.read_text())
    params["download"]["datasets"]["kjv"]["validation_fraction"] = "x"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(params))
    result = python_runner(SCRIPT, "--params", tmp_path / "bad.yaml", "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: download.datasets.kjv.validation_fraction: expected a number in (0, 1), got 'x'"
    )
    assert export_bytes(export) == good
