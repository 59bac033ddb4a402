"""The house: every import inside ``bridge`` points down, folders stay small, public paths hold.

Every import is counted: top level, under ``TYPE_CHECKING`` and inside functions, since
each of them ties two modules as tightly as the others when the code changes.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bridge"
MAX_MODULES_PER_FOLDER = 16

# The layers, top to bottom: a module may import its own layer's leaves and anything
# below its layer, never above. Names are module paths below ``bridge``; a folder
# name stands for every module in it.
LAYERS: list[set[str]] = [
    {"__main__", "cli", "gunicorn", "serve"},
    {"__init__"},
    {"app"},
    {"pages", "mounts", "views", "options", "canary", "observe"},
    {"routing"},
    {"shadow"},
    {"metrics"},
    {"wsgi", "lifespan", "websockets", "requests"},
    {"threads", "broadcast", "errors", "sticky", "stepping", "_types"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The bridge modules ``name`` imports, anywhere in the file."""
    package = name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                stem = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "bridge":
                stem = node.module.split(".")[1:]
            else:
                continue
            targets.append(".".join(stem))
            targets.extend(".".join([*stem, alias.name]) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "bridge":
                    targets.append(".".join(alias.name.split(".")[1:]))
        for target in targets:
            if target in known:
                found.add(target)
            elif f"{target}.__init__" in known or target == "":
                found.add(f"{target}.__init__" if target else "__init__")
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def layer_of(name: str) -> int:
    top = name.split(".")[0]
    for index, layer in enumerate(LAYERS):
        if name in layer or top in layer:
            return index
    raise AssertionError(f"{name} is in no layer; add it to LAYERS in {__file__}.")


def test_no_import_circle_inside_bridge() -> None:
    assert circles_in(graph()) == []


def test_no_import_circle_inside_bench() -> None:
    bench = PACKAGE.parent / "bench"
    found = {".".join(p.relative_to(bench).with_suffix("").parts): p for p in bench.rglob("*.py")}
    known = set(found)
    assert circles_in({name: imports_of(name, path, known) for name, path in found.items()}) == []


def circles_in(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle a depth-first walk of ``edges`` meets."""
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return circles


def test_every_import_points_down_the_layers() -> None:
    upward = []
    for name, targets in graph().items():
        for target in targets:
            # A folder's __init__ may name what its own modules define.
            same_folder = name.split(".")[0] == target.split(".")[0]
            if not same_folder and layer_of(target) < layer_of(name):
                upward.append(f"{name} -> {target}")
    assert sorted(upward) == []


def test_no_folder_holds_more_than_sixteen_modules() -> None:
    for folder in [PACKAGE, *(p for p in PACKAGE.iterdir() if p.is_dir())]:
        count = len(list(folder.glob("*.py")))
        assert count <= MAX_MODULES_PER_FOLDER, f"{folder} holds {count} modules"


def test_the_graph_sees_real_imports() -> None:
    """The checker itself: it finds relative, nested and TYPE_CHECKING imports."""
    edges = graph()
    assert "wsgi.cycle" in edges["wsgi.gateway"]
    assert "threads.pool" in edges["metrics.values"]  # under TYPE_CHECKING
    assert "serve.worker" in edges["serve.servers"]  # inside a function


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("bridge", "Bridge"),
        ("bridge", "Broadcast"),
        ("bridge", "Request"),
        ("bridge", "WebSocket"),
        ("bridge.shadow", "Shadow"),
        ("bridge.metrics", "Metrics"),
        ("bridge.gunicorn", "Worker"),
        ("bridge.cli", "main"),
    ],
)
def test_public_import_paths(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None
