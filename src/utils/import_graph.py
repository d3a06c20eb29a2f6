"""Which project files a program runs: the import closure, read from the source (nothing is imported).

A stage's code dependencies in ``dvc.yaml`` must be every project module it can
import, or an edit to one of them would leave ``dvc status`` clean and a stale
result in place. The same closure decides which code a training checkpoint is
bound to (:func:`src.train.run_inputs.prepare_run_inputs`), so DVC and resume
agree on what counts as "the same code". Imports inside functions count too:
they run when the function does.
"""

from __future__ import annotations

import ast
from pathlib import Path

from src.paths import PROJECT_ROOT

#: Top-level packages of the project; imports of anything else are libraries.
PROJECT_PACKAGES = ("src", "stages", "scripts")

#: Modules that cannot change any output, left out of stage deps (and of the checkpoint's code hash):
NO_OUTPUT_EFFECT = frozenset(
    {
        "src/utils/logging_setup.py",  # where and how log lines are written
        "src/errors.py",  # exception classes: only the wording of messages
        "src/utils/faults.py",  # kill points: inert unless a fault-injection test sets LMPIPE_KILL_AT
        "src/utils/parent_watch.py",  # ends a stage whose dvc is gone: whether it runs, not what it writes
        # refuse to end a stage whose inputs changed while it ran: whether it is recorded, not what it writes
        "src/input_guard.py",
        "src/data/stage_inputs.py",
        "src/train/input_guard.py",
        "src/evaluate/stage_inputs.py",
    }
)


def module_file(name: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The file of project module ``name`` (``src.data.windows``), or None if it is not one."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, root: Path = PROJECT_ROOT) -> set[str]:
    """Project modules that the file at ``path`` imports, anywhere in it, with their parent packages."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package upwards
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import module``
    found = set()
    for name in names:
        parts = name.split(".")
        for end in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            prefix = ".".join(parts[:end])
            if module_file(prefix, root) is not None:
                found.add(prefix)
    return found


def import_closure(entry: Path, root: Path = PROJECT_ROOT, opaque: frozenset[str] = frozenset()) -> set[str]:
    """Every project file ``entry`` runs (itself and its packages' ``__init__``), relative to ``root``.

    The packages count because ``python -m stages.train`` runs ``stages/__init__.py`` first. The
    imports of an ``opaque`` file are not followed (what only it imports serves only it).
    """
    seen: set[Path] = set()
    todo = [entry.resolve()]
    folder = entry.resolve().parent
    while folder != root.resolve() and (folder / "__init__.py").is_file():
        todo.append(folder / "__init__.py")
        folder = folder.parent
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.relative_to(root.resolve()).as_posix() in opaque:
            continue
        for name in imported_modules(path, root):
            target = module_file(name, root)
            if target is not None:
                todo.append(target.resolve())
    return {path.relative_to(root.resolve()).as_posix() for path in seen}


def code_dependencies(entry: str, root: Path = PROJECT_ROOT) -> list[str]:
    """The code files a stage entry depends on: its import closure less :data:`NO_OUTPUT_EFFECT` and
    what only those import."""
    return sorted(import_closure(root / entry, root, NO_OUTPUT_EFFECT) - NO_OUTPUT_EFFECT)
