"""The model learns: a tiny model of the default family (Llama-style) and a GPT-2 overfit one batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.config import ModelConfig, TrainConfig
from src.errors import ConfigError, PipelineError
from src.models.causal_lm import CausalLM, Vocabulary, build_model, scored_vocabulary
from src.models.optim import build_optimizer


@pytest.mark.parametrize("architecture", [ModelConfig().architecture, "gpt2"])
def test_tiny_model_overfits_one_batch(tmp_path: Path, architecture: str) -> None:
    torch.manual_seed(0)
    vocab = Vocabulary(size=50, eos_id=0)
    model = build_model(
        ModelConfig(architecture=architecture, n_layer=2, n_head=2, n_embd=16),
        vocab,
        max_length=16,
        model_cache=tmp_path,
    )
    assert model.config.model_type == architecture
    assert model.config.eos_token_id == model.config.bos_token_id == model.generation_config.pad_token_id == 0
    # max_position_embeddings is GPT-2's n_positions by its config's attribute map: one name for both.
    assert model.config.max_position_embeddings == 16
    assert model.config.vocab_size == 64  # model.vocab_multiple: the 50 ids padded to 64 rows
    module = CausalLM(model, TrainConfig(max_steps=150, warmup_steps=5))
    batch = torch.randint(1, 50, (4, 16))
    optimizer, schedule = build_optimizer(
        model, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.95), warmup_steps=5, max_steps=150, min_lr_ratio=1.0
    )
    first = None
    for _ in range(150):
        loss = module(batch, batch).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    assert first > 3.5  # about ln(50) at random init
    assert loss.item() < 0.2


def test_pretrained_model_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import src.utils.hub as hub

    monkeypatch.setattr(hub, "use_offline_hub", lambda: None)  # keep this test process online
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        PipelineError, match=r"model.pretrained: the Hugging Face Hub \(.*\) is unreachable and 'gpt2'"
    ):
        build_model(ModelConfig(pretrained="gpt2"), Vocabulary(50, 0), 16, tmp_path)


def test_pretrained_model_from_a_folder(tmp_path: Path) -> None:
    model = build_model(ModelConfig(n_layer=1, n_head=1, n_embd=8), Vocabulary(40, 0), 16, tmp_path)
    model.save_pretrained(tmp_path / "mine")
    loaded = build_model(ModelConfig(pretrained=str(tmp_path / "mine")), Vocabulary(40, 0), 16, tmp_path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    with pytest.raises(
        ConfigError,
        match=r"^model.pretrained: '.*mine' has fewer embeddings than the tokenizer's 50 tokens; "
        r"tokenize with its own tokenizer$",
    ):
        build_model(ModelConfig(pretrained=str(tmp_path / "mine")), Vocabulary(50, 0), 16, tmp_path)


def test_compiled_module_still_saves_plain_weights(tmp_path: Path) -> None:
    model = build_model(ModelConfig(n_layer=1, n_head=1, n_embd=8), Vocabulary(40, 0), 16, tmp_path)
    plain = CausalLM(model, TrainConfig(compile=False)).state_dict()
    compiled = CausalLM(model, TrainConfig(compile=True)).state_dict()
    assert list(compiled) == list(plain)
    assert all(key.startswith("model.") and "_orig_mod" not in key for key in compiled)


def test_validation_sums_the_loss_per_source_over_every_rank(tmp_path: Path) -> None:
    """Two sources, two ranks (one of them with a padding batch): each source's loss is the mean over
    its own validation tokens, the combined one is token-weighted, and bits per byte divide the summed
    loss by each source's bytes."""
    import math
    from types import SimpleNamespace

    import numpy as np

    from src.data.token_files import ValidationSources
    from src.data.windows import IGNORE_INDEX, SourceValidation

    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=1, n_head=1, n_embd=8), Vocabulary(50, 0), 8, tmp_path)
    told = ValidationSources(("a", "b"), (100, 57))
    module = CausalLM(model, TrainConfig(max_steps=10, warmup_steps=1), told).eval()
    rng = np.random.default_rng(0)
    sources = [rng.integers(1, 50, 40).astype(np.uint16), rng.integers(1, 50, 23).astype(np.uint16)]
    windows = SourceValidation(sources, 8)
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))
    logged: dict[str, float] = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))

    batches = [b for rank in (0, 1) for b in windows.batches(2, rank, world_size=2)]
    assert [windows.PADDING] in batches  # 6 + 4 windows: 3 + 2 batches over 2 ranks, one rank pads
    module.on_validation_epoch_start()
    with torch.no_grad():
        for index in batches:  # both ranks' batches into one sum: what the reduce over ranks gives
            items = [windows[i] for i in index]
            batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
            module.validation_step(batch, 0)
    module.on_validation_epoch_end()

    def summed_loss(tokens: np.ndarray) -> tuple[float, int]:  # every token but the first, predicted once
        # The model has 8 positions: score the stream window by window as the validation set does.
        total, count = 0.0, 0
        for index in range(len(SourceValidation([tokens], 8))):
            item = SourceValidation([tokens], 8)[index]
            with torch.no_grad():
                out = model(input_ids=item["input_ids"][None]).logits[0, :-1, :50]  # less the padded rows
            targets = item["labels"][1:]
            keep = targets != IGNORE_INDEX
            total += torch.nn.functional.cross_entropy(out[keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
        return total, count

    totals = {name: summed_loss(tokens) for name, tokens in zip("ab", sources, strict=True)}
    assert {name: count for name, (_, count) in totals.items()} == {"a": 39, "b": 22}
    for name, (total, count) in totals.items():
        assert logged[f"val_loss/{name}"] == pytest.approx(total / count, rel=1e-5)
    nats = sum(total for total, _ in totals.values())
    assert logged["val_loss"] == pytest.approx(nats / 61, rel=1e-5)
    assert logged["val_bpb"] == pytest.approx(nats / (math.log(2) * 157), rel=1e-5)
    assert logged["val_bpb/b"] == pytest.approx(totals["b"][0] / (math.log(2) * 57), rel=1e-5)


def write_custom_code_model(folder: Path, marker: Path) -> Path:
    """A model folder of a family of its own, as custom-code Hub repositories ship one: ``config.json``
    with ``model_type: marker`` and an ``auto_map`` naming classes in ``.py`` files beside it (a
    Llama subclass each), whose import writes ``marker``."""
    import json

    model = build_model(ModelConfig(n_layer=1, n_head=1, n_embd=8), Vocabulary(40, 0), 16, folder.parent)
    model.save_pretrained(folder)
    mark = f"from pathlib import Path\n\nPath({str(marker)!r}).write_text('ran')\n"
    (folder / "configuration_marker.py").write_text(
        f"{mark}from transformers import LlamaConfig\n\n\nclass MarkerConfig(LlamaConfig):\n"
        '    model_type = "marker"\n'
    )
    (folder / "modeling_marker.py").write_text(
        f"{mark}from transformers import LlamaForCausalLM\n\n"
        "from .configuration_marker import MarkerConfig\n\n\n"
        "class MarkerForCausalLM(LlamaForCausalLM):\n    config_class = MarkerConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="marker",
        architectures=["MarkerForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_marker.MarkerConfig",
            "AutoModelForCausalLM": "modeling_marker.MarkerForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_pretrained_model_with_code_of_its_own_loads_only_when_trusted(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = write_custom_code_model(tmp_path / "custom", marker)
    with pytest.raises(
        ConfigError,
        match=r"^model.pretrained: folder .*custom holds custom code \(config.json: "
        r"configuration_marker.MarkerConfig, config.json: modeling_marker.MarkerForCausalLM\) that loading "
        r"it would run; set model.trust_remote_code: true if you trust it",
    ):
        build_model(ModelConfig(pretrained=str(folder)), Vocabulary(40, 0), 16, tmp_path)
    assert not marker.exists()
    trusted = ModelConfig(pretrained=str(folder), trust_remote_code=True)
    model = build_model(trusted, Vocabulary(40, 0), 16, tmp_path)
    assert type(model).__name__ == "MarkerForCausalLM" and marker.exists()


def test_a_module_built_for_other_validation_sources_than_its_data_is_one_line(tmp_path: Path) -> None:
    """Told one source, validating on a data module of two: the batches' source ids would index past
    the sums (an IndexError on the CPU, a device assert on a GPU); one line says what to pass instead."""
    from types import SimpleNamespace

    from src.data.token_data import TokenDataModule
    from src.data.token_files import ValidationSources

    class TwoSources(TokenDataModule):
        def __init__(self) -> None:  # only what the check reads
            pass

        validation_sources = ValidationSources(("kjv", "notes"), (100, 50))

    model = build_model(ModelConfig(n_layer=1, n_head=1, n_embd=8), Vocabulary(50, 0), 8, tmp_path)
    module = CausalLM(model, TrainConfig())
    module._trainer = SimpleNamespace(datamodule=TwoSources())
    with pytest.raises(ConfigError, match=r"^CausalLM: built for the validation sources \['validation'\], "):
        module.on_validation_epoch_start()
    told = CausalLM(model, TrainConfig(), TwoSources.validation_sources)
    told._trainer = SimpleNamespace(datamodule=TwoSources())
    told.on_validation_epoch_start()  # told the data's own sources: nothing to refuse
    assert told._val_sum.shape == (2,)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_a_padded_vocabulary_scores_and_generates_as_the_unpadded_model(
    tmp_path: Path, architecture: str
) -> None:
    """``model.vocab_multiple`` adds rows no token has: at the same weights the loss (so val_bpb) and
    the greedy text of the saved model, loaded as users load it, are the unpadded model's. The padded
    rows are set so that their logits would win everywhere if they were not left out."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.conftest import write_gpt2_style_tokenizer

    texts = ["In the beginning God created the heaven and the earth.", "And the earth was without form."] * 30
    tokenizer = AutoTokenizer.from_pretrained(write_gpt2_style_tokenizer(tmp_path / "tokenizer", texts))
    size = len(tokenizer)
    vocab = Vocabulary(size, tokenizer.eos_token_id)
    shape = {"architecture": architecture, "n_layer": 2, "n_head": 2, "n_embd": 32}
    torch.manual_seed(0)
    padded = build_model(ModelConfig(**shape), vocab, 32, tmp_path)
    plain = build_model(ModelConfig(**shape, vocab_multiple=1), vocab, 32, tmp_path)
    rows = padded.get_output_embeddings().weight.shape[0]
    assert rows % 64 == 0 and rows > size and plain.get_output_embeddings().weight.shape[0] == size
    assert (scored_vocabulary(padded), scored_vocabulary(plain)) == (size, size)
    with torch.no_grad():
        for name, value in plain.state_dict().items():
            value.copy_(
                padded.state_dict()[name][: value.shape[0]]
                if value.shape[:1] == (size,)
                else padded.state_dict()[name]
            )
        padded.get_output_embeddings().weight[size:] = 50 * padded.get_output_embeddings().weight[:1]
    encoded = [tokenizer(text)["input_ids"] for text in texts[:2]]
    ids = torch.tensor([row[: min(map(len, encoded))] for row in encoded])
    expected = CausalLM(plain, TrainConfig())(ids, ids).loss
    for train in (TrainConfig(), TrainConfig(loss_chunk_tokens=7)):
        torch.testing.assert_close(CausalLM(padded, train)(ids, ids).loss, expected, atol=1e-5, rtol=0)

    padded.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    prompt = loaded_tokenizer("In the beginning", return_tensors="pt")["input_ids"]
    greedy = loaded.generate(prompt, do_sample=False, max_new_tokens=20, min_new_tokens=20)
    assert int(greedy.max()) < size
    reference = plain.generate(prompt, do_sample=False, max_new_tokens=20, min_new_tokens=20)
    assert loaded_tokenizer.decode(greedy[0]) == tokenizer.decode(reference[0])
