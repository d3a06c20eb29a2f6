"""The library reads top-down: no import cycle, and no module imports a layer above its own.

Layers, lowest first (a module may import its own layer and the ones below):

0. ``src/errors.py``, ``src/paths.py``: what every module may know.
1. ``src/utils/``: leaf helpers that know nothing of the pipeline (files, logging, Hub probe,
   typed config, the import graph).
2. ``src/config/``: the typed params (one module per group of sections).
3. ``src/cli.py``: the shell every entry point runs in; ``src/input_guard.py``, the check every stage
   ends with.
4. ``src/data/``: download, export, tokenizers, token files, windows.
5. ``src/models/``: the causal LM (it may read the data's label convention).
6. ``src/train/``: the training flow, its backends, tracking and outputs.
7. Entry points: ``stages/*`` (DVC) and ``scripts/*`` (the workflow guide's scripts, ``make ui``).
   Nothing imports them. (The guide's paths, ``src/utils/download_datasets.py`` and
   ``src/train/train.py``, run them with ``runpy`` and import nothing of the project.)
"""

from __future__ import annotations

from src.paths import PROJECT_ROOT
from src.utils.import_graph import imported_modules, module_file

TOP = 8


def layer(path: str) -> int:
    if path.startswith(("stages/", "scripts/")):
        return TOP
    prefixes = [
        ("src/__init__.py", 0),
        ("src/errors.py", 0),
        ("src/paths.py", 0),
        ("src/utils/", 1),
        ("src/config/", 2),
        ("src/cli.py", 3),
        ("src/input_guard.py", 3),
        ("src/data/", 4),
        ("src/models/", 5),
        ("src/train/", 6),
        ("src/evaluate/", 7),  # the trained model, the MLflow run of its training
    ]
    for prefix, number in prefixes:
        if path.startswith(prefix):
            return number
    raise AssertionError(f"{path}: no layer; add it to tests/test_layers.py")


def project_graph() -> dict[str, set[str]]:
    """Every project file -> the project files it imports (anywhere in it, parents included)."""
    files = sorted(
        p for folder in ("src", "stages", "scripts") for p in (PROJECT_ROOT / folder).rglob("*.py")
    )
    graph = {}
    for path in files:
        name = path.relative_to(PROJECT_ROOT).as_posix()
        targets = {module_file(module) for module in imported_modules(path)}
        graph[name] = {t.relative_to(PROJECT_ROOT).as_posix() for t in targets if t is not None} - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first node repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = "open", stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node], _ = "done", stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_anywhere() -> None:
    cycle = find_cycle(project_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_import_goes_down_the_layers() -> None:
    upward = [
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, targets in project_graph().items()
        for target in sorted(targets)
        if layer(target) > layer(source) or (layer(target) == TOP and target != source)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a planted cycle is found, a chain is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_guides_scripts_keep_working_without_path_edits() -> None:
    """No module edits ``sys.path``: the editable install and ``python -m`` make ``src`` importable."""
    offenders = [
        path.relative_to(PROJECT_ROOT).as_posix()
        for folder in ("src", "stages", "scripts", "benchmarks")
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        if "sys.path" in path.read_text(encoding="utf-8")
    ]
    assert not offenders, f"sys.path edited in {offenders}"


def test_layers_cover_every_module() -> None:
    for name in project_graph():
        layer(name)  # raises for a module no layer covers
