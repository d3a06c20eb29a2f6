"""Encode many documents fast, with ids identical to the Hugging Face tokenizer's.

What a token file holds per document is defined by the tokenizer itself: the ids
``tokenizer(text)["input_ids"]`` gives (so a BOS first when the tokenizer adds
one by default, as Llama-style tokenizers do), then the EOS id unless those ids
already end with it. :class:`DocumentFrame` is that definition, and
:class:`PerDocumentEncoder` applies it literally; every other encoder is only an
equivalent but faster way to get the same ids.

The faster ways join documents with the frame's special tokens into ~1 MB
chunks and encode each chunk in one call (special tokens are split out first).
That equals per-document encoding only when the tokenizer treats the text after
a special token like the start of a text; a Metaspace pre-tokenizer that adds
its space "first" only (modern Llama/Mistral conversions) does not. A byte-level
BPE whose pre-tokenizer is GPT-2's (the trained default, ``gpt2``) also has an
exact ``tiktoken`` form (same regex, token bytes ranked in merge order), several
times faster and free of the GIL. So every candidate is checked against the
per-document ids on sample text (the built-in probe and the corpus's first
documents) before it is used, and the first that agrees wins.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Protocol

import numpy as np

from src.data.tokenizer_setup import tokenizer_json
from src.errors import ConfigError

log = logging.getLogger(__name__)

#: GPT-2's pre-tokenization regex, which ``tokenizers``' ByteLevel(use_regex=True) applies.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

#: Text that exercises the corners of byte-level BPE (accents, emoji, digits, odd spacing).
PROBE_TEXTS = (
    "Hello, world! It's 2026 -- naïve café, 東京, emoji 🎉🎉.",
    "  leading and trailing spaces   \n\n\ttabs\r\nand newlines \n",
    "numbers 1234567890 3.14159 and symbols #@$%^&*()[]{}<>~`|\\",
    "contractions: I'm, you're, they've, we'll, he'd, don't, ISN'T",
    "Hello again: a second document that starts like the first.",
)

_FRAME_PROBE = "frame probe"


@dataclass(frozen=True)
class DocumentFrame:
    """The ids written around every document: ``start`` + the text's ids + ``end``.

    ``start`` is what the tokenizer puts before a text by default (its BOS, or
    nothing); ``end`` is what it puts after (usually nothing) followed by the EOS
    id, which always ends a document.
    """

    start: tuple[int, ...]
    end: tuple[int, ...]

    @property
    def eos_id(self) -> int:
        return self.end[-1]


def document_frame(tokenizer: Any, eos: int) -> DocumentFrame:
    """How ``tokenizer(text)`` wraps a text, plus the EOS after it: the token files' layout."""
    plain = list(tokenizer(_FRAME_PROBE, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(_FRAME_PROBE)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            end = tuple(full[start + len(plain) :])
            if not end or end[-1] != eos:
                end = (*end, eos)
            return DocumentFrame(tuple(full[:start]), end)
    raise ConfigError(
        f"tokenize.tokenizer: {tokenizer.name_or_path!r} changes a text's own ids when it adds its special "
        "tokens, so documents cannot be framed by them; use another tokenizer"
    )


class DocumentEncoder(Protocol):
    """Encodes a list of documents into one id stream, each document framed as the tokenizer frames it."""

    name: str

    def encode_documents(self, documents: Sequence[str]) -> np.ndarray:
        """(tokens,) uint32 ids: start, doc 1, end, start, doc 2, end, ..."""
        ...


class PerDocumentEncoder:
    """Each document on its own, exactly as ``tokenizer(text)`` encodes it: the definition of the ids."""

    name = "tokenizers, one document at a time"

    def __init__(self, tokenizer: Any, frame: DocumentFrame) -> None:
        self.backend = tokenizer.backend_tokenizer
        self.frame = frame
        # tokenizer(text) already carries start and the end minus the EOS this pipeline adds
        self.added = (frame.eos_id,) if _adds_eos(tokenizer, frame) else ()

    def encode_documents(self, documents: Sequence[str]) -> np.ndarray:
        encodings = self.backend.encode_batch(list(documents), add_special_tokens=True)
        ids = chain.from_iterable(chain(e.ids, self.added) for e in encodings)
        return np.fromiter(ids, dtype=np.uint32)


def _adds_eos(tokenizer: Any, frame: DocumentFrame) -> bool:
    """False when the tokenizer itself already ends every text with the EOS."""
    full = tokenizer(_FRAME_PROBE)["input_ids"]
    return not (full and full[-1] == frame.eos_id)


class _JoinedText:
    """Documents joined with the frame's special-token text into one string per chunk."""

    def __init__(self, tokenizer: Any, frame: DocumentFrame) -> None:
        self.start = "".join(tokenizer.convert_ids_to_tokens(list(frame.start)))
        self.end = "".join(tokenizer.convert_ids_to_tokens(list(frame.end)))

    def join(self, documents: Sequence[str]) -> str:
        return "".join(chain.from_iterable((self.start, document, self.end) for document in documents))


class TokenizersEncoder:
    """The Hugging Face fast tokenizer over joined chunks: one call per chunk, no per-document overhead."""

    name = "tokenizers"

    def __init__(self, tokenizer: Any, frame: DocumentFrame) -> None:
        self.backend = tokenizer.backend_tokenizer
        self.text = _JoinedText(tokenizer, frame)

    def encode_documents(self, documents: Sequence[str]) -> np.ndarray:
        encoding = self.backend.encode(self.text.join(documents), add_special_tokens=False)
        return np.asarray(encoding.ids, dtype=np.uint32)


class TiktokenEncoder:
    """``tiktoken`` over the same vocabulary and joined chunks: identical ids, several times faster."""

    name = "tiktoken"

    def __init__(self, encoding: Any, text: _JoinedText) -> None:
        self.encoding = encoding
        self.text = text
        self.allowed = set(encoding.special_tokens_set)

    def encode_documents(self, documents: Sequence[str]) -> np.ndarray:
        ids = self.encoding.encode_to_numpy(self.text.join(documents), allowed_special=self.allowed)
        return ids.astype(np.uint32, copy=False)


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


def build_encoder(tokenizer: Any, frame: DocumentFrame, probe_texts: Sequence[str] = ()) -> DocumentEncoder:
    """The fastest encoder whose ids equal per-document encoding on the probe texts (and a built-in set)."""
    reference = PerDocumentEncoder(tokenizer, frame)
    candidates: list[DocumentEncoder] = []
    encoding = tiktoken_encoding(tokenizer)
    if encoding is not None:
        candidates.append(TiktokenEncoder(encoding, _JoinedText(tokenizer, frame)))
    candidates.append(TokenizersEncoder(tokenizer, frame))
    probe = [*PROBE_TEXTS, *probe_texts]
    expected = reference.encode_documents(probe)
    for candidate in candidates:
        if np.array_equal(candidate.encode_documents(probe), expected):
            return candidate
        log.info("%s gives other ids than the tokenizer on sample text; not used", candidate.name)
    return reference
