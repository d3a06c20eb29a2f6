"""Where the project lives on disk.

Every relative path in ``params.yaml`` is resolved against the project root, not
the current directory, so the pipeline behaves the same whether it is started
by DVC, from a notebook, or from a sub-folder.

Queued DVC experiments run in a temporary copy of the repository that DVC
deletes afterwards. Stores that must outlive a run (the MLflow database, run
logs, downloaded Hub models) therefore live in the :func:`workspace_root`, the
user's own checkout, which DVC names in ``DVC_ROOT``.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def workspace_root(root: Path = PROJECT_ROOT) -> Path:
    """The user's checkout: ``DVC_ROOT`` when DVC runs us in a temporary copy of it, else ``root``."""
    named = os.environ.get("DVC_ROOT")
    if named and Path(named).is_dir():
        return Path(named).resolve()
    return root


def resolve_path(path: str | Path, root: Path = PROJECT_ROOT) -> Path:
    """Return ``path`` as an absolute path, taking relative paths from ``root``."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


def display_path(path: Path, root: Path = PROJECT_ROOT) -> str:
    """A path as users should read it in messages: relative to the root when inside it."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
