"""The guide's download script: its command line, log files and one-line errors (the logic: tests/data/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts.download_datasets import build_parser, main
from src.config import PARAMS_FILE
from src.errors import ConfigError

SCRIPT = "src/utils/download_datasets.py"


def test_unreachable_hub_fails_fast_with_advice(tmp_path: Path, python_runner, free_port: int) -> None:
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
        env={"HF_ENDPOINT": f"http://127.0.0.1:{free_port}", "HF_HUB_OFFLINE": "0"},
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
    # The default corpus is a file already: its Arrow copy is dropped once exported (Hub datasets and
    # URLs keep theirs, in the seed layout: tests/data/test_download.py).
    assert sorted(p.name for p in (tmp_path / "raw_cache" / "raw").iterdir()) == ["kjv"]
    assert "exported" in (tmp_path / "logs" / "download_datasets_2.log").read_text()


def test_the_datasets_to_download_are_download_datasets_of_params(two_local_datasets, tmp_path: Path) -> None:
    """The guide's DATASETS_TO_DOWNLOAD is ``download.datasets``: all, or the ``--dataset`` ones."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(two_local_datasets(tmp_path)))
    common = ["--params", str(tmp_path / "params.yaml"), "--log-dir", str(tmp_path / "logs")]
    assert sorted(main([*common, "--cache-dir", str(tmp_path / "all")])) == ["first", "second"]
    assert list(main([*common, "--cache-dir", str(tmp_path / "one"), "--dataset", "second"])) == ["second"]
    assert sorted(
        p.name for p in (tmp_path / "one" / "raw").iterdir() if (p / "manifest.json").is_file()
    ) == ["second"]
    with pytest.raises(
        ConfigError, match=r"^download.datasets.kjv: no such dataset; choose one of: first, second"
    ):
        main([*common, "--cache-dir", str(tmp_path / "none"), "--dataset", "kjv"])
    assert "--dataset NAME" in build_parser().format_help()


def test_bad_params_exit_with_one_line_and_keep_outputs(
    folder_bytes, tmp_path: Path, tiny_params_file: Path, python_runner
) -> None:
    cache = tmp_path / "cache"
    main(["--params", str(tiny_params_file), "--cache-dir", str(cache), "--log-dir", str(tmp_path / "logs")])
    export = cache / "raw" / "kjv"
    good = folder_bytes(export)
    params = yaml.safe_load(tiny_params_file.read_text())
    params["download"]["datasets"]["kjv"]["validation_fraction"] = "x"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(params))
    result = python_runner(SCRIPT, "--params", tmp_path / "bad.yaml", "--cache-dir", cache)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: download.datasets.kjv.validation_fraction: expected a number in (0, 1), got 'x'"
    )
    assert folder_bytes(export) == good
