"""The solver package's imports: no backend loaded on import, no function-level imports of quota
modules, an acyclic import graph inside the package, and nothing imported from the rest of quota."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import quota.solvers

PACKAGE = Path(quota.solvers.__file__).parent
BACKENDS = ("ortools", "cvxpy", "highspy")


def _modules() -> dict[str, tuple[ast.Module, list[str]]]:
    """Module name -> (syntax tree, source lines) for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.glob("*.py")):
        name = "quota.solvers" if path.stem == "__init__" else f"quota.solvers.{path.stem}"
        text = path.read_text()
        out[name] = (ast.parse(text), text.splitlines())
    return out


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module]
    return []


def test_import_loads_no_backend() -> None:
    code = f"import sys, quota.solvers; print(sorted(m for m in sys.modules if m.split('.')[0] in {BACKENDS!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_no_function_level_quota_imports_and_backends_only_lazily() -> None:
    """Every ``quota`` import sits at module top level; OR-Tools and cvxpy are imported only inside
    functions (lazily), each with a comment saying so."""
    for name, (tree, source) in _modules().items():
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            for module in _imported(node):
                root = module.split(".")[0]
                if root == "quota":
                    assert id(node) in top, f"{name}:{node.lineno} imports {module} inside a function"
                if root in BACKENDS:
                    assert id(node) not in top, f"{name}:{node.lineno} imports {module} at module level"
                    assert "lazy" in source[node.lineno - 1], f"{name}:{node.lineno} lazy import without a comment"


def test_package_import_graph_is_acyclic_and_self_contained() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (tree, _) in modules.items():
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.If):  # TYPE_CHECKING blocks count too
                nodes = list(ast.walk(node))
            else:
                nodes = [node]
            for sub in nodes:
                for module in _imported(sub):
                    if module.startswith("quota"):
                        assert module.startswith("quota.solvers"), f"{name} imports {module} from outside quota.solvers"
                        deps.add(module)
        graph[name] = deps - {name}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, "import cycle: " + " -> ".join(path + [node])
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            visit(dep, path + [node])
        state[node] = 2

    for name in sorted(graph):
        visit(name, [])
