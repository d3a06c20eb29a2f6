"""The workflow guide's ``LightningDataModule``: raw splits to tokenized windows, once, on rank 0.

```python
from src.data.data_manager import LightningDataModule
from transformers import AutoTokenizer

# trust_remote_code=False: a tokenizer folder with code of its own is refused, never run or asked about
tokenizer = AutoTokenizer.from_pretrained(
    "data/main_cache/tokenized/bpe/kjv/tokenizer", trust_remote_code=False
)
dm = LightningDataModule(tokenizer=tokenizer, dataset_configs={"kjv": {}}, batch_size=8, max_length=128)
dm.prepare_data()   # downloads if needed, tokenizes once into data/main_cache/tokenized/<tokenizer>/kjv/
dm.setup("fit")     # memory-maps the token files
```

Several datasets are mixed: ``dataset_configs={"kjv": {}, "notes": {}}`` with ``weights={"kjv": 0.7,
"notes": 0.3}`` (default: proportional to their training tokens); validation reports each one's loss.

It shares the download and tokenize code with the DVC stages, so a token folder
made by either is used by the other. (The train stage itself only reads tokens:
see :class:`~src.data.token_data.TokenDataModule`.)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.config import PARAMS_FILE, DatasetSpec, Params, load_params
from src.data.download import download_dataset
from src.data.manifests import MANIFEST as EXPORT_MANIFEST
from src.data.token_data import TokenDataModule
from src.data.tokenize_corpus import is_up_to_date, tokenize_export
from src.data.tokenizer_setup import pretrained_eos_token, tokenizer_dir_name
from src.errors import ConfigError
from src.utils.typed_config import build

log = logging.getLogger(__name__)


class LightningDataModule(TokenDataModule):
    """Token windows for causal-LM training from datasets of ``params.yaml`` (or given inline), mixed."""

    def __init__(
        self,
        tokenizer: Any,
        dataset_configs: Mapping[str, Mapping[str, Any]],
        batch_size: int = 8,
        max_length: int = 128,
        *,
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        num_workers: int = 0,
        tokenizer_name: str | None = None,
        params: Params | None = None,
        params_file: str | Path = PARAMS_FILE,
    ) -> None:
        """
        Args:
            tokenizer: a ``transformers`` fast tokenizer; each dataset's tokens go to
                ``tokenized/<tokenizer_name>/<dataset>/``.
            dataset_configs: ``{name: overrides}``, one or more; the name's entry in ``download.datasets``
                (or ``download.local``) is used, with the given ``load_dataset`` settings on top (``{}``
                keeps it as it is).
            batch_size, max_length: per-device batch size and window length in tokens.
            weights: share of training windows per dataset, e.g. ``{"a": 0.7, "b": 0.3}`` (default:
                proportional to each dataset's training tokens).
            seed: seed of the training window order (a pure function of seed and position).
            tokenizer_name: folder name under ``tokenized/`` (default: derived from the tokenizer).
            params / params_file: where paths and dataset definitions come from.
        """
        if not dataset_configs:
            raise ConfigError("dataset_configs: name at least one dataset, e.g. {'kjv': {}}")
        if weights is not None and set(weights) != set(dataset_configs):
            raise ConfigError(
                f"weights: expected one weight per dataset of dataset_configs "
                f"({', '.join(dataset_configs)}), got {', '.join(weights) or 'none'}"
            )
        self.params = params or load_params(params_file)
        self.dataset_specs = {
            name: self._dataset_spec(name, overrides) for name, overrides in dataset_configs.items()
        }
        self.tokenizer_name = tokenizer_name or tokenizer_dir_name(tokenizer)
        super().__init__(
            {name: self.params.paths.token_dir(self.tokenizer_name, name) for name in dataset_configs},
            tokenizer,
            weights=weights,
            batch_size=batch_size,
            max_length=max_length,
            seed=seed,
            num_workers=num_workers,
        )

    def _dataset_spec(self, name: str, overrides: Mapping[str, Any]) -> DatasetSpec:
        known = self.params.download.all_datasets().get(name)
        base = dataclasses.asdict(known) if known else {}
        if not base and "path" not in overrides:
            raise ConfigError(
                f"dataset_configs.{name}: not in params.yaml download.datasets; give its 'path'"
            )
        return build(DatasetSpec, {**base, **overrides}, f"dataset_configs.{name}")

    def prepare_data(self) -> None:
        """Download (if an export is missing) and tokenize (if tokens are missing or stale), on rank 0."""
        for name, spec in self.dataset_specs.items():
            export_dir = self.params.paths.raw_dir() / name
            token_dir = self.token_dirs[name]
            if not (export_dir / EXPORT_MANIFEST).is_file():
                download_dataset(
                    name,
                    spec,
                    self.params.paths.raw_dir().parent,
                    hub_timeout_s=self.params.download.hub_timeout_s,
                    key=self.params.download.key_of(name),
                )
            if is_up_to_date(token_dir, self.tokenizer, export_dir):
                log.info("tokens in %s are up to date", token_dir)
                continue
            tokenize_export(
                export_dir,
                token_dir,
                self.tokenizer,
                name=self.tokenizer_name,
                kind="given to the data module",
                threads=self.params.tokenize.threads(),
                eos_token=pretrained_eos_token(self.tokenizer, self.params.tokenize.eos_token),
            )
