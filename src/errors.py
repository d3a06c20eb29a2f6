"""Errors a user can act on.

Anything raised as a :class:`PipelineError` is printed by the entry points as a
single line (no traceback) and ends the process with a non-zero exit code. The
message must name the key or file at fault and say what to do about it.
"""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-blank line of an error's message (its type when it has none), for a one-line report."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(error).__name__


class PipelineError(Exception):
    """A failure caused by input the user controls (params, files, network)."""


class ConfigError(PipelineError):
    """A value in ``params.yaml`` is missing, unknown, of the wrong type or impossible."""


class FieldError(ValueError):
    """Raised by a config dataclass's own checks; the loader prefixes the key path.

    Dataclasses do not know where they sit in ``params.yaml``, so they name the
    field relative to themselves and the loader turns that into
    ``download.datasets.kjv.<field>: <message>``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TrainingStopped(Exception):
    """A training stopped when told (a signal, its parent gone) after checkpointing: not a failure of
    the user's input, so it is reported as ``stopped: ...`` with the signal's exit code (128 + N)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
