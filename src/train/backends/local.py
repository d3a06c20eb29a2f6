"""One local process: the Trainer runs here, checkpoints go to ``paths.checkpoint_dir``."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from src.config import Params
from src.paths import display_path, resolve_path
from src.train.checkpoints import CheckpointState, clear_checkpoints, find_resumable, save_checkpoint
from src.train.loop import Outcome, Placement, train_on_rank
from src.train.run_inputs import RunInputs
from src.train.tracking import RunTracker

log = logging.getLogger(__name__)


class LocalBackend:
    """Training in this process on ``train.accelerator``."""

    def __init__(self, params: Params, root: Path) -> None:
        self.params, self.root = params, root
        self.checkpoint_dir = resolve_path(params.paths.checkpoint_dir, root)

    def check(self) -> None:
        """Nothing beyond what params validation already checked."""

    def find_resume(self, inputs: RunInputs) -> CheckpointState | None:
        """The newest checkpoint this run may continue; checkpoints of other settings are removed."""
        resumed = None
        if self.params.train.resume == "auto":
            resumed, reason = find_resumable(self.checkpoint_dir, inputs.settings, inputs.inputs)
            log.info("resume: %s", reason)
        if resumed is None:
            clear_checkpoints(self.checkpoint_dir)
        return resumed

    def train(self, inputs: RunInputs, tracker: RunTracker) -> Outcome:
        keep = self.params.train.keep_checkpoints

        def persist(trainer: L.Trainer, step: int, state: CheckpointState | None) -> None:
            if state is not None:
                path = save_checkpoint(self.checkpoint_dir, step, state, keep=keep)
                log.info("checkpoint %s", display_path(path))

        placement = Placement({"accelerator": self.params.train.accelerator, "devices": 1}, persist)
        return train_on_rank(self.params, self.root, inputs, tracker, placement)
