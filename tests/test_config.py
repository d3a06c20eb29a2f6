"""params.yaml is validated before any work, with one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from src.config import PARAMS_FILE, DatasetSpec, load_params, parse_params
from src.errors import ConfigError


def repo_params() -> dict:
    return yaml.safe_load(PARAMS_FILE.read_text())


def with_value(dotted: str, value: object) -> dict:
    data = repo_params()
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def error_of(data: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_params(data)
    return str(caught.value)


def test_repository_params_file_validates() -> None:
    params = load_params()
    assert "kjv" in params.download.datasets
    spec = params.download.datasets["kjv"]
    assert isinstance(spec, DatasetSpec)
    assert 0 < spec.validation_fraction < 1
    assert params.tokenize.special_tokens == ("<|endoftext|>",)  # a tuple: the params are immutable


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "download.datasets.kjv.validation_fraction",
            "x",
            "download.datasets.kjv.validation_fraction: expected a number in (0, 1), got 'x'",
        ),
        (
            "download.datasets.kjv.validation_fraction",
            1.5,
            "download.datasets.kjv.validation_fraction: expected a number in (0, 1), got 1.5",
        ),
        (
            "download.datasets.kjv.split_seed",
            2.5,
            "download.datasets.kjv.split_seed: expected an integer in [0, 4294967295], got 2.5",
        ),
        (
            "download.datasets.kjv.split_seed",
            True,
            "download.datasets.kjv.split_seed: expected an integer in [0, 4294967295], got True",
        ),
        ("download.hub_timeout_s", 0, "download.hub_timeout_s: expected a number in (0, 120], got 0"),
        ("download.datasets.kjv.path", 3, "download.datasets.kjv.path: expected a string, got 3"),
        ("paths.cache_dir", ["a"], "paths.cache_dir: expected a string, got ['a']"),
        ("download.datasets", {}, "download.datasets: list at least one dataset to download"),
        ("download", "kjv", "download: expected a mapping of settings, got 'kjv'"),
        (
            "tokenize.datasets",
            ["nope"],
            "tokenize.datasets: 'nope' is not in download.datasets or download.local (kjv)",
        ),
        ("tokenize.datasets", [], "tokenize.datasets: name at least one dataset to tokenize"),
        ("tokenize.datasets", ["kjv", "kjv"], "tokenize.datasets: 'kjv' is listed twice"),
        ("train.mixture", {"kjv": -1}, "train.mixture.kjv: expected a weight >= 0, got -1.0"),
        ("train.mixture", {"kjv": 0}, "train.mixture: at least one weight must be above 0"),
        (
            "train.mixture",
            {"kjv": 1, "notes": 1},
            "train.mixture: 'notes' is not in tokenize.datasets; add it there",
        ),
        (
            "tokenize.datasets",
            ["kjv", "tokenizer"],
            "tokenize.datasets: 'tokenizer' names the tokenizer's folder; rename that dataset",
        ),
        (
            "tokenize.special_tokens",
            "<|endoftext|>",
            "tokenize.special_tokens: expected a list of strings, got '<|endoftext|>'",
        ),
    ],
)
def test_bad_values_name_the_key(key: str, value: object, message: str) -> None:
    assert error_of(with_value(key, value)) == message


def test_unknown_keys_are_rejected_at_every_level() -> None:
    assert error_of({**repo_params(), "trian": {}}).startswith("trian: unknown key (expected one of: paths,")
    message = error_of(with_value("download.datasets.kjv.validaton_fraction", 0.1))
    assert message.startswith("download.datasets.kjv.validaton_fraction: unknown key")
    assert "validation_fraction" in message


def test_missing_required_setting() -> None:
    data = repo_params()
    del data["download"]["datasets"]["kjv"]["path"]
    assert error_of(data) == "download.datasets.kjv.path: missing required setting"


def test_dataset_names_must_be_plain() -> None:
    data = repo_params()
    data["download"]["datasets"]["../evil"] = {"path": "json", "data_files": "x.json"}
    assert error_of(data).startswith("download.datasets.../evil: dataset names may use")


def test_data_files_accepts_string_list_or_split_mapping() -> None:
    for files, parsed in (
        ("a.txt", "a.txt"),
        (["a.txt", "b.txt"], ("a.txt", "b.txt")),
        ({"train": "a.txt", "validation": ["b.txt"]}, {"train": "a.txt", "validation": ("b.txt",)}),
    ):
        params = parse_params(with_value("download.datasets.kjv.data_files", files))
        assert params.download.datasets["kjv"].data_files == parsed
    message = error_of(with_value("download.datasets.kjv.data_files", 5))
    assert message.startswith("download.datasets.kjv.data_files: expected a string or a list of strings")


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("paths:\n  cache_dir: [unclosed\n")
    with pytest.raises(ConfigError, match=r"params.yaml \(line \d+\): .*fix the YAML syntax"):
        load_params(bad)


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")


def test_params_read_like_dvc_reads_them(tmp_path: Path) -> None:
    """``lr: 1e-3`` is a number (as for DVC and people), a duplicate key is refused with its line."""
    text = PARAMS_FILE.read_text().replace("lr: 3.0e-3", "lr: 1e-3")
    assert "lr: 1e-3" in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").train.lr == 0.001
    duplicated = text.replace("  seed: 0\n", "  seed: 0\n  seed: 1\n", 1)
    (tmp_path / "params.yaml").write_text(duplicated)
    line = duplicated.splitlines().index("  seed: 1") + 1
    with pytest.raises(ConfigError) as caught:
        load_params(tmp_path / "params.yaml")
    expected = f"(line {line}): duplicate key 'seed' (DVC refuses the file; keep one); fix the YAML syntax"
    assert str(caught.value) == f"{tmp_path / 'params.yaml'} {expected}"
    (tmp_path / "params.yaml").write_text(text.replace("use_ray: false", "use_ray: yes"))
    with pytest.raises(ConfigError, match=r"^ray.use_ray: expected true or false, got 'yes'$"):
        load_params(tmp_path / "params.yaml")


def test_a_params_file_that_is_a_folder_or_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"folder.yaml: is a folder, expected the params file"):
        load_params(tmp_path / "folder.yaml")
    (tmp_path / "latin1.yaml").write_bytes("train:\n  sample_prompt: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml \(line 2\): byte 0xe9 is not UTF-8; save the file"):
        load_params(tmp_path / "latin1.yaml")


def test_settings_that_would_fail_only_at_the_end_are_refused_now() -> None:
    assert error_of(with_value("train.sample_prompt", "")).startswith(
        "train.sample_prompt: must not be empty"
    )


def test_a_mixture_names_every_tokenized_dataset() -> None:
    data = with_value("download.local", {"notes": {"path": "text", "data_dir": "corpus"}})
    data["tokenize"]["datasets"] = ["kjv", "notes"]
    data["train"]["mixture"] = {"kjv": 1}
    assert error_of(data) == (
        "train.mixture: no weight for 'notes' of tokenize.datasets; give it one (0 = validate only)"
    )
    data["train"]["mixture"] = {"kjv": 1, "notes": 0}
    assert parse_params(data).train.mixture == {"kjv": 1.0, "notes": 0.0}


@pytest.mark.parametrize(
    ("data_dir", "message"),
    [
        ("", "download.local.notes.data_dir: the project root would be the corpus"),
        (".", "download.local.notes.data_dir: the project root would be the corpus"),
        ("data", "download.local.notes.data_dir: 'data' holds paths.cache_dir, where the exports"),
        ("data/main_cache", "download.local.notes.data_dir: 'data/main_cache' holds paths.cache_dir"),
    ],
)
def test_a_local_folder_is_neither_the_project_nor_around_the_cache(data_dir: str, message: str) -> None:
    data = with_value("download.local", {"notes": {"path": "text", "data_dir": data_dir}})
    assert error_of(data).startswith(message)


@pytest.mark.parametrize(
    ("key", "instead"),
    [
        ("vocab_size", "the vocabulary comes from the tokenizer (tokenize.vocab_size"),
        ("eos_token_id", "comes from the tokenizer (its EOS: tokenize.eos_token)"),
        ("pad_token_id", "comes from the tokenizer"),
        ("bos_token_id", "comes from the tokenizer"),
        ("max_position_embeddings", "the context is train.max_length; set that instead"),
        ("n_positions", "the context is train.max_length"),
        ("n_ctx", "the context is train.max_length"),
        ("hidden_size", "set model.n_embd instead"),
        ("n_embd", "set model.n_embd instead"),
        ("num_attention_heads", "set model.n_head instead"),
        ("n_head", "set model.n_head instead"),
        ("num_hidden_layers", "set model.n_layer instead"),
        ("n_layer", "set model.n_layer instead"),
        ("attention_dropout", "set model.dropout instead"),
        ("resid_pdrop", "set model.dropout instead"),
    ],
)
def test_model_settings_the_pipeline_derives_are_refused(key: str, instead: str) -> None:
    message = error_of(with_value("model.config", {"rope_theta": 10000.0, key: 10}))
    assert message.startswith(f"model.config.{key}: the pipeline sets it"), message
    assert instead in message and message.endswith("remove it from model.config")


def test_every_setting_the_pipeline_derives_is_refused_or_an_open_default() -> None:
    """What ``common_settings`` gives every family: refused in ``model.config``, but for the defaults
    it is meant to change (``num_key_value_heads: 2``, ``tie_word_embeddings: false``, the MLP width)."""
    from src.config import DERIVED_MODEL_SETTINGS, ModelConfig
    from src.models.architectures import common_settings

    open_defaults = {"num_key_value_heads", "tie_word_embeddings", "intermediate_size"}
    for family in ("gpt2", "llama"):
        settings = common_settings(ModelConfig(architecture=family), 500, 7, 32)
        assert set(settings) - open_defaults <= set(DERIVED_MODEL_SETTINGS), family
    assert not open_defaults & set(DERIVED_MODEL_SETTINGS)
    changed = {"num_key_value_heads": 2, "tie_word_embeddings": False}
    assert parse_params(with_value("model.config", changed)).model.config == changed


def project_params(root: Path, monkeypatch: pytest.MonkeyPatch, **paths: str) -> Path:
    """A project at ``root``: its ``params.yaml`` (the file the stages read) with these ``paths``."""
    import src.config

    data = repo_params()
    data["paths"].update(paths)
    root.mkdir(parents=True, exist_ok=True)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setattr(src.config, "PARAMS_FILE", params_file)
    return params_file


@pytest.mark.parametrize("key", ["cache_dir", "model_dir", "metrics_file", "plots_dir"])
def test_dvc_outputs_outside_the_project_are_refused(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "project"
    for value in (str(tmp_path / "other_disk" / "out"), "../out", "data/../../out"):
        params_file = project_params(root, monkeypatch, **{key: value})
        for path in (None, params_file):
            with pytest.raises(ConfigError) as refused:
                load_params(path)
            message = str(refused.value)
            assert message.startswith(f"paths.{key}: {value!r} is outside the project ("), message
            assert "DVC cannot track an output outside its repository; use a path inside" in message


def test_dvc_outputs_inside_the_project_and_other_paths_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, elsewhere = tmp_path / "project", tmp_path / "other_disk"
    (root / "data").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "data" / "big").symlink_to(elsewhere, target_is_directory=True)  # a link to another disk
    inside = {
        "cache_dir": str(root / "data" / "cache"),  # absolute, inside the project
        "model_dir": "data/big/model",  # through a link inside the project
        "metrics_file": "./metrics.json",
        "plots_dir": "data/../plots",
        "model_cache": str(elsewhere / "model_cache"),  # no DVC outputs: anywhere
        "log_dir": str(elsewhere / "logs"),
        "checkpoint_dir": "../checkpoints",
    }
    params = load_params(project_params(root, monkeypatch, **inside))
    assert params.paths.model_dir == "data/big/model"
    other = tmp_path / "run" / "params.yaml"  # a params file of no project, given with --params
    other.parent.mkdir()
    data = repo_params()
    data["paths"]["model_dir"] = str(elsewhere / "model")
    other.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_params(other).paths.model_dir == str(elsewhere / "model")
