"""The ``evaluate`` section of ``params.yaml``: downstream evaluation of the trained model with
lm-evaluation-harness."""

from __future__ import annotations

import re
from dataclasses import dataclass

from src.errors import FieldError
from src.utils.typed_config import setting

#: The pipeline's own tasks, made per ``tokenize.datasets`` source from its validation split (offline):
#: ``bpb`` scores every validation document by lm-eval's rolling log-likelihood (an independent
#: ``val_bpb``); ``continuation`` asks which of ``choices`` endings is a document's own.
BUILTIN_TASKS = ("bpb", "continuation")

_TASK_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class EvaluateConfig:
    """The evaluate stage: lm-evaluation-harness tasks run on the trained model (``paths.model_dir``)."""

    tasks: tuple[str, ...] = ("bpb", "continuation")
    """Tasks to run: the built-in ``bpb`` and ``continuation`` (one task per validation source,
    offline), lm-eval task names (``hellaswag``, ``arc_easy``, ``lambada_openai``: their data comes
    from the Hugging Face Hub) and the names of tasks in ``include_path``."""
    include_path: str = "eval_tasks"
    """The folder of your lm-eval task YAML files (lm-eval's format); its tasks can be named in
    ``tasks``. A DVC dep of the evaluate stage: editing a task re-runs it. Relative to the project root."""
    num_fewshot: int | None = setting(None, within="[0, 1000]")
    """Few-shot examples per question; null = each task's own default (the built-in ones are zero-shot)."""
    limit: int | None = setting(None, within="[1, 1000000000]")
    """Documents per task, for a quick look; null = all (the figures to compare)."""
    batch_size: int = setting(16, within="[1, 65536]")
    """Requests per forward pass."""
    device: str = "auto"
    """``auto`` = the training's accelerator (``cuda`` when ``train.accelerator`` is not ``cpu`` and a GPU
    is there); or a torch device (``cpu``, ``cuda:0``)."""
    choices: int = setting(4, within="[2, 26]")
    """The continuation task: a document's own ending and ``choices - 1`` endings of other documents."""
    seed: int = setting(0, within="[0, 4294967295]")
    """Picks the continuation task's wrong endings (its data is the same bytes for the same seed)."""

    def __post_init__(self) -> None:
        if not self.include_path.strip():
            raise FieldError("include_path", "give a folder (the project's own is eval_tasks)")
        if not self.tasks:
            raise FieldError("tasks", "list at least one task (the built-in ones: bpb, continuation)")
        for task in self.tasks:
            if not _TASK_NAME.match(task):
                raise FieldError("tasks", f"{task!r} is no task name (letters, digits, '_', '.', '-')")
        if len(set(self.tasks)) != len(self.tasks):
            raise FieldError("tasks", "a task is listed twice")

    def hub_tasks(self) -> tuple[str, ...]:
        """The tasks that are not built in: lm-eval's registry or ``include_path``."""
        return tuple(task for task in self.tasks if task not in BUILTIN_TASKS)
