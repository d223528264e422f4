"""The import structure: no cycle inside the model package, no upward import between our packages.

Layers, lowest first: workbench (generic CLI/field helpers) -> sepvit (the model) -> analysis (counting,
timing, attention maps) -> experiments (the runner, MLflow). Imports are read with `ast` from every .py
file (function-level imports included), so a lazy import inside a function counts like any other.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workbench", "sepvit", "analysis", "experiments")
# package -> packages of ours it must not import
FORBIDDEN = {
    "workbench": {"sepvit", "analysis", "experiments"},
    "sepvit": {"analysis", "experiments"},
    "analysis": {"experiments"},
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the modules of `packages` it imports (resolving relative imports and `from pkg import mod`)."""
    files = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets.add(source)
                targets.update(f"{source}.{alias.name}" for alias in node.names)  # `from pkg import module`
        graph[name] = {t for t in targets if t in files}
    return graph


def find_cycle(graph: dict[str, set[str]], within: str) -> list[str] | None:
    """A cycle among the modules of package `within` (as a path), or None."""
    nodes = {n for n in graph if n == within or n.startswith(within + ".")}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node] & nodes):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(nodes):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((src, dst) for src, dsts in graph.items() for dst in dsts
                  if dst.split(".")[0] in FORBIDDEN.get(src.split(".")[0], ()))


def test_no_import_cycle_inside_the_model_package():
    graph = import_graph(ROOT)
    assert "sepvit.model" in graph and "sepvit.config" in graph["sepvit.model"]  # the graph sees our imports
    assert find_cycle(graph, "sepvit") is None, f"import cycle: {' -> '.join(find_cycle(graph, 'sepvit'))}"


def test_no_upward_imports():
    graph = import_graph(ROOT)
    assert upward_imports(graph) == []


@pytest.fixture
def toy(tmp_path):
    def write(name: str, text: str) -> None:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    for pkg in PACKAGES:
        write(f"{pkg}/__init__.py", "")
    write("sepvit/config.py", "def build():\n    from .model import Net\n")  # a lazy import is still an import
    write("sepvit/model.py", "from sepvit.config import build\n")
    write("analysis/plots.py", "from experiments import runner\n")
    write("experiments/runner.py", "import sepvit.model\n")
    return tmp_path


def test_the_checks_find_a_cycle_and_an_upward_import(toy):
    graph = import_graph(toy)
    assert graph["experiments.runner"] == {"sepvit.model"}
    assert find_cycle(graph, "sepvit") in (["sepvit.config", "sepvit.model", "sepvit.config"],
                                           ["sepvit.model", "sepvit.config", "sepvit.model"])
    assert upward_imports(graph) == [("analysis.plots", "experiments"), ("analysis.plots", "experiments.runner")]
