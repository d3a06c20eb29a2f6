"""New models of any causal-LM family that ``transformers`` ships, from ``model.*`` of params.yaml.

``model.architecture`` names a config type (``gpt2``, ``llama``, ``qwen2``,
``mistral`` ...); the common settings (``n_layer``, ``n_head``, ``n_embd``,
``dropout``) map onto each family's own names, and ``model.config`` sets anything
else the family's config has (``num_key_value_heads``, ``rope_theta``,
``tie_word_embeddings`` ...). ``transformers`` validates the result; its
complaint becomes one line. Attention goes through PyTorch's SDPA, which takes
the flash kernels on a GPU.
"""

from __future__ import annotations

import math
from typing import Any

from src.config import ModelConfig
from src.errors import ConfigError

#: The families the suite trains, saves, reloads and generates with; any other causal LM also builds.
TESTED_FAMILIES = ("gpt2", "llama", "qwen2", "mistral")


def causal_lm_families() -> list[str]:
    """Every config type with a causal-LM head in the installed ``transformers``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def gated_mlp_width(width: int) -> int:
    """8/3 x width rounded up to 64: a SwiGLU block of the parameters of GPT-2's 4 x width MLP."""
    return 64 * math.ceil(8 * width / 3 / 64)


def common_settings(
    config: ModelConfig, vocab_size: int, eos_id: int, max_length: int, bos_id: int | None = None
) -> dict[str, Any]:
    """``model.*`` in the family's own names (GPT-2 keeps its historical ones).

    ``bos_id``: the tokenizer's BOS; a tokenizer without one begins with EOS, as GPT-2's does.
    """
    # No pad_token_id: the Llama-style families make it the embedding's padding_idx, whose row starts
    # at zero and never learns from the input side, and with pad = EOS that is the document separator;
    # GPT-2 checks every forward whether the batch holds it (a host-device sync each step). Generation's
    # padding is the generation config's (build_model), the saved tokenizer's its own (src.train.outputs).
    special = {"bos_token_id": eos_id if bos_id is None else bos_id, "eos_token_id": eos_id}
    if config.architecture == "gpt2":
        return {
            "vocab_size": vocab_size,
            "n_positions": max_length,
            "n_embd": config.n_embd,
            "n_layer": config.n_layer,
            "n_head": config.n_head,
            "resid_pdrop": config.dropout,
            "embd_pdrop": config.dropout,
            "attn_pdrop": config.dropout,
            **special,
        }
    return {
        "vocab_size": vocab_size,
        "max_position_embeddings": max_length,
        "hidden_size": config.n_embd,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head,
        "intermediate_size": gated_mlp_width(config.n_embd),
        "attention_dropout": config.dropout,
        "tie_word_embeddings": True,  # as GPT-2: at small sizes the embedding is most of the parameters
        **special,
    }


def new_model_config(
    config: ModelConfig, vocab_size: int, eos_id: int, max_length: int, bos_id: int | None = None
) -> Any:
    """The ``transformers`` config of a new model, validated by ``transformers`` (errors as one line)."""
    from transformers import AutoConfig

    family = config.architecture
    if family not in causal_lm_families():
        raise ConfigError(
            f"model.architecture: {family!r} is not a causal-LM architecture of transformers "
            f"(for example {', '.join(TESTED_FAMILIES)})"
        )
    defaults = AutoConfig.for_model(family)
    for key, value in config.config.items():
        if not _is_setting(defaults, family, key, value):
            raise ConfigError(
                f"model.config.{key}: not a setting of the {family} config; see its documentation"
            )
    settings = common_settings(config, vocab_size, eos_id, max_length, bos_id)
    # The vocabulary and the size must reach the model: a family whose config has no such setting
    # (a composite, multimodal config) would silently build its default size instead.
    gpt2_names = "n_embd" in settings
    sizing = ("vocab_size", *(("n_embd", "n_layer") if gpt2_names else ("hidden_size", "num_hidden_layers")))
    missing = [key for key in sizing if not hasattr(defaults, key)]
    if missing:
        raise ConfigError(
            f"model.architecture: the {family} config has no {', '.join(missing)} setting (a composite or "
            f"multimodal config), so model.n_embd, model.n_layer and the vocabulary cannot be applied; "
            f"choose a text causal-LM family (for example {', '.join(TESTED_FAMILIES)})"
        )
    settings = {k: v for k, v in settings.items() if hasattr(defaults, k)} | dict(config.config)
    try:
        return AutoConfig.for_model(family, **settings)
    except _config_errors() as error:  # transformers' strict validation, several lines
        reason = ": ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise ConfigError(
            f"model: the {family} config refuses these settings ({reason}); check model.n_layer, "
            "model.n_head, model.n_embd and model.config"
        ) from None


def _is_setting(defaults: Any, family: str, key: str, value: Any) -> bool:
    """A config attribute, or a legacy name the config converts (``rope_theta`` into ``rope_parameters``);
    not a typo, which transformers would keep as an attribute that nothing reads."""
    from transformers import AutoConfig

    if hasattr(defaults, key):
        return True
    try:
        changed = AutoConfig.for_model(family, **{key: value}).to_dict()
    except _config_errors():
        return True  # a real setting with a wrong value: transformers says why below
    before = defaults.to_dict()
    return any(changed.get(name) != before.get(name) for name in set(changed) | set(before) if name != key)


def _config_errors() -> tuple[type[Exception], ...]:
    """What a config raises for settings it refuses (transformers 5 configs are strict dataclasses)."""
    from huggingface_hub.errors import StrictDataclassError

    return (ValueError, TypeError, StrictDataclassError)
