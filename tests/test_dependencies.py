"""Declared dependencies match imports: every third-party module our packages, notebooks and tests import is
declared in pyproject.toml, and every declared runtime dependency is imported somewhere (or has a stated reason)."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# our packages and the tests' own helper modules (tests/*_support.py and the like, imported by name)
OURS = {"workbench", "sepvit", "experiments", "analysis"} | {path.stem for path in (ROOT / "tests").glob("*.py")}
NOT_IMPORTED = {"jupyterlab": "the notebook UI users open; nothing imports it"}
CODE = ["workbench", "sepvit", "experiments", "analysis", "notebooks", "tests"]


def _imports(folders: list[str]) -> set[str]:
    names = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - OURS - set(sys.stdlib_module_names) - {"__future__"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {_normalise(re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0]) for spec in specs}


def test_every_imported_module_is_declared():
    distributions = packages_distributions()
    declared = _declared() | _declared("dev")
    missing = {}
    for module in _imports(CODE):
        providers = {_normalise(d) for d in distributions.get(module, [module])}
        if not providers & declared:
            missing[module] = sorted(providers)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_declared_runtime_dependency_is_imported():
    distributions = packages_distributions()
    imported = {_normalise(d) for module in _imports(CODE) for d in distributions.get(module, [module])}
    unused = _declared() - imported - {_normalise(n) for n in NOT_IMPORTED}
    assert not unused, f"declared but never imported (drop them or say why in NOT_IMPORTED): {sorted(unused)}"
