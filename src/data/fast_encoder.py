"""Encode many documents fast, with ids identical to the Hugging Face tokenizer's.

Documents are joined with the EOS token into ~1 MB chunks and each chunk is
encoded in one call: special tokens are split out first, so this gives the same
ids as encoding document by document, without the per-call overhead.

A byte-level BPE whose pre-tokenizer is GPT-2's (the trained default, ``gpt2``)
has an exact ``tiktoken`` form: same regex, token bytes ranked in merge order.
``tiktoken`` is about 5x faster than ``tokenizers`` here and releases the GIL,
so threads scale. Every conversion is checked against the Hugging Face
tokenizer on sample text before it is used; any other tokenizer, or any
disagreement, falls back to ``tokenizers`` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from src.data.tokenizer_setup import tokenizer_json

log = logging.getLogger(__name__)

#: GPT-2's pre-tokenization regex, which ``tokenizers``' ByteLevel(use_regex=True) applies.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

#: Text that exercises the corners of byte-level BPE (accents, emoji, digits, odd spacing).
PROBE_TEXTS = (
    "Hello, world! It's 2026 -- naïve café, 東京, emoji 🎉🎉.",
    "  leading and trailing spaces   \n\n\ttabs\r\nand newlines \n",
    "numbers 1234567890 3.14159 and symbols #@$%^&*()[]{}<>~`|\\",
    "contractions: I'm, you're, they've, we'll, he'd, don't, ISN'T",
)


class DocumentEncoder(Protocol):
    """Encodes a list of documents into one id stream with EOS after each document."""

    name: str

    def encode_documents(self, documents: Sequence[str]) -> np.ndarray:
        """(tokens,) uint32 ids: doc 1, EOS, doc 2, EOS, ..."""
        ...


class TokenizersEncoder:
    """The Hugging Face fast tokenizer itself: works for every tokenizer."""

    name = "tokenizers"

    def __init__(self, tokenizer: Any, eos_token: str) -> None:
        self.backend = tokenizer.backend_tokenizer
        self.eos_token = eos_token

    def encode_documents(self, documents: Sequence[str]) -> np.ndarray:
        text = self.eos_token.join(documents) + self.eos_token
        return np.asarray(self.backend.encode(text, add_special_tokens=False).ids, dtype=np.uint32)


class TiktokenEncoder:
    """``tiktoken`` over the same vocabulary: identical ids, several times faster."""

    name = "tiktoken"

    def __init__(self, encoding: Any, eos_token: str) -> None:
        self.encoding = encoding
        self.eos_token = eos_token
        self.allowed = set(encoding.special_tokens_set)

    def encode_documents(self, documents: Sequence[str]) -> np.ndarray:
        text = self.eos_token.join(documents) + self.eos_token
        return self.encoding.encode_to_numpy(text, allowed_special=self.allowed).astype(np.uint32, copy=False)


def tiktoken_encoding(tokenizer: Any) -> Any | None:
    """The ``tiktoken.Encoding`` equivalent to ``tokenizer``, or None when it has no such form."""
    import tiktoken
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spec = tokenizer_json(tokenizer)
    model = spec.get("model") or {}
    if spec.get("normalizer") is not None or not _is_gpt2_byte_level(spec.get("pre_tokenizer")):
        return None
    if model.get("type") != "BPE" or model.get("dropout") or model.get("byte_fallback"):
        return None
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return None
    vocab: dict[str, int] = model["vocab"]
    special = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    char_to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    try:
        ranks = {
            bytes(char_to_byte[c] for c in token): i for token, i in vocab.items() if token not in special
        }
    except KeyError:
        return None
    if len(ranks) != len(vocab) - len(set(vocab) & set(special)) or len(ranks) < 256:
        return None
    if not _merges_in_rank_order(model.get("merges", []), vocab):
        return None
    return tiktoken.Encoding(
        name=f"converted-{id(tokenizer)}", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=special
    )


def _is_gpt2_byte_level(pre_tokenizer: dict | None) -> bool:
    if pre_tokenizer and pre_tokenizer.get("type") == "Sequence":
        steps = pre_tokenizer.get("pretokenizers", [])
        pre_tokenizer = steps[0] if len(steps) == 1 else None
    return bool(
        pre_tokenizer
        and pre_tokenizer.get("type") == "ByteLevel"
        and pre_tokenizer.get("use_regex", True)
        and not pre_tokenizer.get("add_prefix_space", False)
    )


def _merges_in_rank_order(merges: list, vocab: dict[str, int]) -> bool:
    """tiktoken merges the lowest-ranked token first; HF applies merges in list order. Same thing iff
    each merge's result has a higher id than every earlier merge's result."""
    last = -1
    for merge in merges:
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        merged = vocab.get(left + right)
        if merged is None or merged <= last:
            return False
        last = merged
    return True


def build_encoder(tokenizer: Any, eos_token: str, probe_texts: Sequence[str] = ()) -> DocumentEncoder:
    """The fastest encoder whose ids match ``tokenizer`` on the probe texts (and a built-in set)."""
    reference = TokenizersEncoder(tokenizer, eos_token)
    encoding = tiktoken_encoding(tokenizer)
    if encoding is None:
        log.info("tokenizer has no tiktoken form; encoding with tokenizers")
        return reference
    fast = TiktokenEncoder(encoding, eos_token)
    probe = [*PROBE_TEXTS, *probe_texts]
    if not np.array_equal(fast.encode_documents(probe), reference.encode_documents(probe)):
        log.warning("tiktoken form of the tokenizer disagrees with it; encoding with tokenizers")
        return reference
    return fast
