"""The package's layering holds: no import runs upward, no two modules import each other.

Layers, lowest first; a module may import its own layer and the ones below. Imports inside
functions count too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

LAYERS = {
    "prunekit.errors": 0,
    "prunekit.progress": 0,
    "prunekit.store": 0,
    "prunekit.devices": 0,
    "prunekit.data": 1,
    "prunekit.models": 2,
    "prunekit.evaluation": 3,
    "prunekit.heads": 4,
    "prunekit.recovery": 5,
    "prunekit.tokens": 6,
    "prunekit.keys": 6,
    "prunekit.report": 7,
    "prunekit.demo": 7,
    "prunekit.ui": 8,
    "prunekit.cli": 8,
    "prunekit.__main__": 9,
}


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    matches = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def _imports() -> dict[str, set[str]]:
    """Module -> the prunekit modules it imports (``from prunekit.x import y`` counts as x.y when
    x.y is a module, else x)."""
    files = {_module(p): p for p in (REPO / "prunekit").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prunekit"):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    found.add(child if child in files else node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("prunekit"))
        graph[name] = found - {name}
    return graph


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in _imports() if m != "prunekit" and _layer(m) is None)
    assert not unplaced, f"add these to LAYERS: {unplaced}"


def test_no_import_runs_upward():
    upward = [
        f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
        for m, deps in _imports().items()
        for d in deps
        if _layer(m) is not None and _layer(d) is not None and _layer(d) > _layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep in graph and dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_every_module_declares_its_public_names():
    lacking = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "prunekit").rglob("*.py"))
        if p.name not in ("__init__.py", "__main__.py") and "__all__" not in p.read_text()
    ]
    assert not lacking, f"no __all__ in {lacking}"
