"""The common shell of every command-line entry point.

User-caused failures (:class:`~src.errors.PipelineError`) become one line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from src.errors import PipelineError

EXIT_USER_ERROR = 2


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main`` and exit with 0, or with 2 and a one-line message on a user error."""
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
