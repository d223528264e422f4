"""The import structure: no cycle inside the model package, no upward import between our packages, and no module
that imports a command-line script.

Layers, lowest first: workbench (generic CLI/field helpers) -> sepvit (the model) -> analysis (counting,
timing, attention maps) -> experiments (the runner, MLflow). Imports are read with `ast` from every .py
file (function-level imports included), so a lazy import inside a function counts like any other.

A command-line script is a module that defines a top-level `main` and calls it under `if __name__ == "__main__"`
(e.g. analysis/benchmark.py, experiments/search.py). Code reaches what a script does through the library
modules it calls, never through the script (its argv, its exit codes, its printing): no module of our packages
and no notebook source imports one; tests may. A script is therefore a leaf that nothing depends on, so the layers
bind library modules only: a script may use any layer's library (analysis/benchmark.py times the runner's step
with `experiments.train_config.TrainConfig`'s settings rather than a copy of them).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = "notebooks"  # jupytext sources (py:percent): they import our packages like any caller
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


def import_graph(root: Path, packages=PACKAGES, callers: tuple[Path, ...] = ()) -> dict[str, set[str]]:
    """module -> the modules of `packages` it imports (resolving relative imports and `from pkg import mod`);
    `callers`: further files outside the packages (notebook sources), keyed by their path."""
    files = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in [*files.items(), *((str(c.relative_to(root)), c) for c in callers)]:
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


def is_script(tree: ast.Module) -> bool:
    """Defines a top-level `main` and has a top-level `if __name__ == "__main__":` block."""
    defines_main = any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)
    return defines_main and any(
        isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__" and isinstance(node.test.ops[0], ast.Eq)
        and isinstance(node.test.comparators[0], ast.Constant) and node.test.comparators[0].value == "__main__"
        for node in tree.body)


def scripts(root: Path, packages=PACKAGES) -> set[str]:
    """The command-line scripts among the modules of `packages`."""
    return {module_name(root, p) for pkg in packages for p in (root / pkg).rglob("*.py")
            if is_script(ast.parse(p.read_text(), str(p)))}


def script_imports(graph: dict[str, set[str]], script_names: set[str]) -> list[tuple[str, str]]:
    """(module, script) for every module that imports a command-line script other than itself."""
    return sorted((src, dst) for src, dsts in graph.items() for dst in dsts if dst in script_names and dst != src)


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


def upward_imports(graph: dict[str, set[str]], script_names: set[str] = frozenset()) -> list[tuple[str, str]]:
    """(module, module of a higher layer it imports) for every library module (scripts are leaves: see above)."""
    return sorted((src, dst) for src, dsts in graph.items() for dst in dsts
                  if src not in script_names and dst.split(".")[0] in FORBIDDEN.get(src.split(".")[0], ()))


def test_no_import_cycle_inside_the_model_package():
    graph = import_graph(ROOT)
    assert "sepvit.model" in graph and "sepvit.config" in graph["sepvit.model"]  # the graph sees our imports
    assert find_cycle(graph, "sepvit") is None, f"import cycle: {' -> '.join(find_cycle(graph, 'sepvit'))}"


def test_no_upward_imports():
    graph, found = import_graph(ROOT), scripts(ROOT)
    assert ("analysis.benchmark", "experiments.train_config") in [(s, d) for s, ds in graph.items() for d in ds]
    assert upward_imports(graph, found) == []


def test_no_module_or_notebook_imports_a_command_line_script():
    notebooks = tuple(sorted((ROOT / NOTEBOOKS).glob("*.py")))
    graph, found = import_graph(ROOT, callers=notebooks), scripts(ROOT)
    assert len(notebooks) >= 5 and "experiments.runner" in graph["notebooks/03_ablation_report.py"]
    assert "experiments.trained_reach" in graph["notebooks/01_complexity.py"]  # the libraries of the commands
    assert "analysis.speed" in graph["notebooks/05_latency.py"]
    assert {"analysis.benchmark", "analysis.complexity", "analysis.receptive_field", "experiments.trained_erf",
            "experiments.search", "experiments.ablate"} <= found
    assert not {"analysis.speed", "analysis.timing", "analysis.speed_tracking", "analysis.complexity_tables",
                "analysis.reach", "experiments.trained_reach", "experiments.search_storage",
                "experiments.search_call", "experiments.runner", "experiments.runner.running"} & found  # libraries
    assert script_imports(graph, found) == []


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
    write("experiments/tool.py", "def main(argv=None):\n    return 0\n\n\nif __name__ == '__main__':\n    main()\n")
    write("experiments/caller.py", "def go():\n    from experiments import tool\n    return tool.main([])\n")
    write("experiments/library.py", "def main(argv=None):\n    return 0\n")  # a main, but no script guard
    write("experiments/user.py", "from experiments.library import main\n")
    write("analysis/cli.py", "from experiments import library\n\n\ndef main():\n    library.main()\n\n\n"
                             "if __name__ == '__main__':\n    main()\n")  # a script: may use a higher layer
    write("notebooks/report.py", "# %%\nfrom experiments.tool import main\n")
    return tmp_path


def test_the_checks_find_a_cycle_and_an_upward_import(toy):
    graph = import_graph(toy)
    assert graph["experiments.runner"] == {"sepvit.model"}
    assert find_cycle(graph, "sepvit") in (["sepvit.config", "sepvit.model", "sepvit.config"],
                                           ["sepvit.model", "sepvit.config", "sepvit.model"])
    assert upward_imports(graph, scripts(toy)) == [("analysis.plots", "experiments"),
                                                   ("analysis.plots", "experiments.runner")]


def test_the_check_finds_a_module_or_notebook_that_imports_a_script(toy):
    found = scripts(toy)
    assert found == {"analysis.cli", "experiments.tool"}
    graph = import_graph(toy, callers=(toy / "notebooks" / "report.py",))
    assert script_imports(graph, found) == [("experiments.caller", "experiments.tool"),
                                            ("notebooks/report.py", "experiments.tool")]
