"""Where training runs: one local process, or a Ray Train worker group.

:func:`src.train.fit.fit` drives one flow (prepare the inputs, find the resume
point, open the MLflow run, train, write the outputs) and asks a backend only
the few things that differ between them. A new backend (another cluster
manager, say) implements :class:`Backend` in a module here and is chosen in
:func:`src.train.fit.select_backend`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from src.train.checkpoints import CheckpointState
from src.train.loop import Outcome
from src.train.run_inputs import RunInputs
from src.train.stopping import StopSignals
from src.train.tracking import RunTracker


class Backend(Protocol):
    """The parts of a training run that depend on where it runs."""

    def check(self) -> None:
        """Refuse settings this backend cannot run, before any work starts."""
        ...

    def find_resume(self, inputs: RunInputs) -> CheckpointState | None:
        """The checkpoint of these inputs to continue from (None: start afresh)."""
        ...

    def configuration_folder(self, inputs: RunInputs) -> Path:
        """Where this configuration's checkpoints (and the lock one training of it holds) live."""
        ...

    @property
    def stops_at_step_boundary(self) -> bool:
        """Whether a stop request is honoured at the next step (with a checkpoint) or at once."""
        ...

    def train(self, inputs: RunInputs, tracker: RunTracker, stop: StopSignals | None = None) -> Outcome:
        """Train to ``train.max_steps``; rank 0 logs to ``tracker``. Returns what the outputs need.

        ``stop``: where a stop request arrives, for a backend that stops at a step boundary."""
        ...

    def prune(self, inputs: RunInputs) -> None:
        """After a finished run: drop the checkpoints of all but ``train.keep_configurations``."""
        ...
