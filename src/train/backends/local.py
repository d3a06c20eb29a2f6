"""One local process: the Trainer runs here, checkpoints go to ``paths.checkpoint_dir``."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from src.config import Params
from src.errors import ConfigError
from src.paths import display_path, resolve_path
from src.train.checkpoints import (
    CheckpointState,
    configuration_folder,
    find_resumable,
    list_checkpoints,
    nearest_other_configuration,
    prune_configurations,
    save_checkpoint,
)
from src.train.loop import Outcome, Placement, train_on_rank
from src.train.run_inputs import RunInputs
from src.train.stopping import StopSignals
from src.train.tracking import RunTracker
from src.utils.files import check_writable

log = logging.getLogger(__name__)


def check_accelerator(accelerator: str) -> None:
    """Refuse a GPU setting on a machine without one, instead of a Lightning traceback later."""
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    missing = {"gpu": not (cuda or mps), "cuda": not cuda, "mps": not mps}.get(accelerator, False)
    if missing:
        raise ConfigError(
            f"train.accelerator: {accelerator}, but PyTorch finds no such device on this machine; set "
            "train.accelerator: cpu (or auto, which takes a GPU when there is one)"
        )


class LocalBackend:
    """Training in this process on ``train.accelerator``; checkpoints in
    ``<paths.checkpoint_dir>/run-<settings hash>/``, one folder per configuration."""

    def __init__(self, params: Params, root: Path) -> None:
        self.params, self.root = params, root
        self.checkpoint_root = resolve_path(params.paths.checkpoint_dir, root)

    def check(self) -> None:
        """Before anything starts (and before any checkpoint is read): the accelerator is there,
        and the checkpoint folder can be written."""
        check_accelerator(self.params.train.accelerator)
        check_writable("paths.checkpoint_dir", self.checkpoint_root, kind="folder", into=True)

    def find_resume(self, inputs: RunInputs) -> CheckpointState | None:
        """The newest checkpoint of this configuration; other configurations are left as they are."""
        if self.params.train.resume != "auto":
            return None
        folder = self.configuration_folder(inputs)
        resumed, reason = find_resumable(folder, inputs.shaping, inputs.inputs)
        if resumed is None and not list_checkpoints(folder):
            reason = nearest_other_configuration(self.checkpoint_root, folder, inputs.shaping, inputs.inputs)
        log.info("resume: %s", reason)
        return resumed

    stops_at_step_boundary = True

    def configuration_folder(self, inputs: RunInputs) -> Path:
        return configuration_folder(self.checkpoint_root, inputs.fingerprint)

    def train(self, inputs: RunInputs, tracker: RunTracker, stop: StopSignals | None = None) -> Outcome:
        keep = self.params.train.keep_checkpoints
        folder = self.configuration_folder(inputs)

        def persist(trainer: L.Trainer, step: int, state: CheckpointState | None) -> Path | None:
            if state is None:
                return None
            path = save_checkpoint(folder, step, state, keep=keep)
            log.info("checkpoint %s", display_path(path))
            return path

        options = {"accelerator": self.params.train.accelerator, "devices": 1}
        placement = Placement(options, persist, stop=stop)
        return train_on_rank(self.params, self.root, inputs, tracker, placement)

    def prune(self, inputs: RunInputs) -> None:
        current = self.configuration_folder(inputs)
        for path in prune_configurations(
            self.checkpoint_root, current, self.params.train.keep_configurations
        ):
            log.info("removed the checkpoints %s (train.keep_configurations)", display_path(path))
