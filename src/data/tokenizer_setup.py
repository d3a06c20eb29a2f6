"""Get the tokenizer: train a byte-level BPE offline, or load a pretrained one.

Both end up as a ``transformers`` fast tokenizer, saved next to the tokens so
``AutoTokenizer.from_pretrained(<tokenized dir>/tokenizer)`` gives back exactly
the tokenizer that made them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from src.config import TokenizeConfig
from src.errors import ConfigError, PipelineError, first_line
from src.paths import display_path
from src.utils.hub import from_folder_or_hub, refuse_custom_code

log = logging.getLogger(__name__)

#: Parts of a serialized tokenizer that change how text is padded or cut, never which ids it gets.
_RUNTIME_ONLY = ("padding", "truncation")

#: The ``tokenizer_class`` a fast tokenizer without a model-specific class saves under.
_PLAIN_BACKEND = "TokenizersBackend"


def train_bpe(documents: Iterator[str], config: TokenizeConfig, num_documents: int | None = None) -> Any:
    """Train a GPT-2-style byte-level BPE on ``documents``; same corpus and settings, same tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(config.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer, length=num_documents)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=config.eos_token, bos_token=config.eos_token, unk_token=None
    )


def load_pretrained(
    name_or_path: str, model_cache: Path, hub_timeout_s: float, *, trust_remote_code: bool = False
) -> Any:
    """A pretrained tokenizer from a project folder or the Hub (cached under ``model_cache``).

    ``trust_remote_code`` (``model.trust_remote_code``): without it, a tokenizer that would run code
    of its own is refused in one line (see :func:`src.utils.hub.from_folder_or_hub`).
    """
    from transformers import AutoTokenizer

    return from_folder_or_hub(
        AutoTokenizer.from_pretrained,
        name_or_path,
        key="tokenize.tokenizer",
        cache_dir=model_cache,
        timeout_s=hub_timeout_s,
        trust_remote_code=trust_remote_code,
    )


def eos_id(tokenizer: Any, eos_token: str | None = None) -> int:
    """The id written after every document: ``eos_token``, else the tokenizer's own EOS.

    Looked up in the vocabulary itself: GPT-2's EOS is also its UNK and BOS
    (``<|endoftext|>``, id 50256), so "the id equals the UNK id" does not mean
    "not in the vocabulary".
    """
    token = eos_token or tokenizer.eos_token
    if token is None:
        raise ConfigError(
            f"tokenize.eos_token: {tokenizer.name_or_path!r} has no EOS token to end documents with; "
            f"set tokenize.eos_token to one of its tokens{_special_tokens_hint(tokenizer)}"
        )
    token_id = tokenizer.get_vocab().get(token)
    if token_id is None:
        raise ConfigError(
            f"tokenize.eos_token: {token!r} is not in the vocabulary of {tokenizer.name_or_path!r}; "
            f"set tokenize.eos_token to one of its tokens{_special_tokens_hint(tokenizer)}"
        )
    return int(token_id)


def pretrained_eos_token(tokenizer: Any, fallback: str) -> str:
    """The EOS of a pretrained tokenizer: its own, else ``fallback`` (``tokenize.eos_token``) if it has it.

    A tokenizer without an EOS (BERT-style ones) cannot end documents by itself;
    ``tokenize.eos_token`` names the token that does, and an unknown one is one line.
    """
    if tokenizer.eos_token is not None:
        return str(tokenizer.eos_token)
    if fallback in tokenizer.get_vocab():
        return fallback
    raise ConfigError(
        f"tokenize.eos_token: {tokenizer.name_or_path!r} has no EOS token and {fallback!r} is not in its "
        f"vocabulary; set tokenize.eos_token to the token that ends a document"
        f"{_special_tokens_hint(tokenizer)}"
    )


def _special_tokens_hint(tokenizer: Any) -> str:
    special = [str(t) for t in getattr(tokenizer, "all_special_tokens", [])][:8]
    return f" (its special tokens: {', '.join(special)})" if special else ""


def tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    """The fast tokenizer's full definition (model, merges, pre-tokenizer...) as data."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"tokenize.tokenizer: {tokenizer.name_or_path!r} has no fast (Rust) tokenizer")
    data = json.loads(backend.to_str())
    return {key: value for key, value in data.items() if key not in _RUNTIME_ONLY}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of everything that decides the ids a tokenizer produces.

    Stored in the token manifest so tokens are never read with another tokenizer.
    """
    canonical = json.dumps(tokenizer_json(tokenizer), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_tokenizer_folder(folder: Path, stage: str, *, trust_remote_code: bool = False) -> Any:
    """A tokenizer the pipeline saved (``save_pretrained``) in ``folder``; one line naming the folder and
    the DVC stage that writes it when it cannot be loaded.

    A tokenizer with code of its own (trusted when it was made) keeps it in the folder; it is run
    only with ``trust_remote_code`` (``model.trust_remote_code``), and refused in one line otherwise.
    """
    refuse_custom_code(folder, key=None, trust_remote_code=trust_remote_code)
    try:
        return _resolved_class(folder).from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise PipelineError(
            f"{display_path(folder)}: cannot load the tokenizer ({first_line(error, 200)}); re-run "
            f"`dvc repro {stage}` (or `dvc checkout`)"
        ) from None


def _resolved_class(folder: Path) -> Any:
    """The class ``AutoTokenizer`` resolves ``folder`` to, imported without the model classes where
    that is certain.

    A folder whose ``tokenizer_config.json`` names the plain backend (:data:`_PLAIN_BACKEND`, what
    the trained BPE saves as), with no ``config.json`` (no model type to map the name to another
    class) and no code of its own, resolves to that class; loading it directly skips importing the
    model code and torch, about 6 s of a tokenize stage. Every other folder goes through
    ``AutoTokenizer`` itself.
    """
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None
    if (
        isinstance(config, dict)
        and config.get("tokenizer_class") == _PLAIN_BACKEND
        and "auto_map" not in config
        and not (folder / "config.json").exists()
    ):
        from transformers import TokenizersBackend

        return TokenizersBackend
    from transformers import AutoTokenizer

    return AutoTokenizer


def tokenizer_dir_name(tokenizer: Any) -> str:
    """The folder name under ``tokenized/`` for a tokenizer object (as the seed lays it out).

    A tokenizer loaded from ``tokenized/<name>/tokenizer`` (the tokenizer stage's) or from a token
    folder's copy, ``tokenized/<name>/<dataset>/tokenizer``, maps back to ``<name>``; a Hub
    tokenizer uses its id; another folder its base name.
    """
    source = str(getattr(tokenizer, "name_or_path", "") or "")
    if not source:
        raise ConfigError("tokenizer: it has no name; pass tokenizer_name= to the data module")
    path = Path(source)
    if path.is_dir():
        if path.name == "tokenizer" and (path.parent / "manifest.json").is_file():
            return path.parent.parent.name
        if path.name == "tokenizer" and path.parent.parent.name == "tokenized":
            return path.parent.name
        return path.name
    return source
