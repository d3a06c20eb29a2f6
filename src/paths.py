"""Where the project lives on disk.

Every relative path in ``params.yaml`` is resolved against the project root, not
the current directory, so the pipeline behaves the same whether it is started
by DVC, from a notebook, or from a sub-folder.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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
