"""Where training runs: one local process, or a Ray Train worker group.

:func:`src.train.fit.fit` drives one flow (prepare the inputs, find the resume
point, open the MLflow run, train, write the outputs) and asks a backend only
the few things that differ between them. A new backend (another cluster
manager, say) implements :class:`Backend` in a module here and is chosen in
:func:`src.train.fit.select_backend`.
"""

from __future__ import annotations

from typing import Protocol

from src.train.checkpoints import CheckpointState
from src.train.loop import Outcome
from src.train.run_inputs import RunInputs
from src.train.tracking import RunTracker


class Backend(Protocol):
    """The parts of a training run that depend on where it runs."""

    def check(self) -> None:
        """Refuse settings this backend cannot run, before any work starts."""
        ...

    def find_resume(self, inputs: RunInputs) -> CheckpointState | None:
        """The checkpoint of these inputs to continue from (None: start afresh)."""
        ...

    def train(self, inputs: RunInputs, tracker: RunTracker) -> Outcome:
        """Train to ``train.max_steps``; rank 0 logs to ``tracker``. Returns what the outputs need."""
        ...

    def prune(self, inputs: RunInputs) -> None:
        """After a finished run: drop the checkpoints of all but ``train.keep_configurations``."""
        ...
