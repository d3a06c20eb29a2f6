"""The tokenized default corpus as the training benchmarks read it (run ``dvc repro tokenize`` first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.config import Params
from src.data.manifests import TokenManifest
from src.data.token_files import read_token_manifest
from src.models.causal_lm import Vocabulary
from src.paths import resolve_path
from src.utils.environment import configure_environment


def default_data(params: Params) -> tuple[Path, TokenManifest, Vocabulary, Any]:
    """The token folder of ``tokenize.*`` (its first dataset), its manifest and vocabulary, and the
    data module over it (set up for fitting, with the batch, context and seed of ``train.*``)."""
    configure_environment(model_cache=resolve_path(params.paths.model_cache))
    from transformers import AutoTokenizer

    from src.data.token_data import TokenDataModule

    token_dir = params.paths.token_dir(params.tokenize.tokenizer, params.tokenize.datasets[0])
    manifest = read_token_manifest(token_dir)
    vocab = Vocabulary(manifest.tokenizer.vocab_size, manifest.tokenizer.eos_id)
    tokenizer = AutoTokenizer.from_pretrained(str(token_dir / "tokenizer"))
    t = params.train
    data = TokenDataModule(
        token_dir, tokenizer, batch_size=t.batch_size, max_length=t.max_length, seed=t.seed
    )
    data.setup("fit")
    return token_dir, manifest, vocab, data
