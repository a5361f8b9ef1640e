"""The import graph of ``quota`` runs one way: a module imports only its own package and the layers below it.

The layers, lowest first (the README's module map shows the same order):

    base       atomic, versioned, schedule, signals, device (and the package root, which imports lazily)
    models     architectures as data
    quant      quantization primitives (pure tensor math)
    recipe     the recipe contract
    kernels    Triton kernels, each with its PyTorch reference
    quantize   quantization transforms (rotation, GPTQ, QuantLinear, the quota attention)
    runtime    the pruning runtime
    profiling  sensitivity and cost curves of any model
    testbed    the synthetic world (scenes, tasks, the testbed model, its calibration and profiling)
    saved      saved quantized checkpoints: save and load (rebuilds the testbed's projector, hence above it)
    eval       evaluation harness, suites, lmms-eval plugin
    bench      kernel, end-to-end and solver benchmarks
    allocate   profile -> problem -> solver -> recipe
    refine     measured refinement of the k best schedules
    cli        the command line
    __main__   ``python -m quota``

``solvers`` stands apart: it imports nothing else from quota, and any layer may use it.

The test parses import statements (no module is imported). Imports inside ``if TYPE_CHECKING:`` blocks are
annotations only and never run, so they are left out. Function-level imports of quota modules are allowed
only in ``quota/cli/``, where lazy imports keep ``quota solve`` and ``--help`` from loading torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "quota"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("quota", "quota.atomic", "quota.versioned", "quota.schedule", "quota.signals", "quota.device"),
    ("quota.models",),
    ("quota.quant",),
    ("quota.recipe",),
    ("quota.kernels",),
    ("quota.quantize",),
    ("quota.runtime",),
    ("quota.profiling",),
    ("quota.data",),
    ("quota.testbed",),
    ("quota.saved",),
    ("quota.eval",),
    ("quota.bench",),
    ("quota.allocate",),
    ("quota.refine",),
    ("quota.cli",),
    ("quota.__main__",),
)
STANDALONE = "quota.solvers"  # imports only itself; importable from any layer

# Deliberate exceptions: (importing module, imported module), each with its reason. Keep it short.
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layer unit a module belongs to: its entry of :data:`LAYERS` (or the solvers package)."""
    if module == STANDALONE or module.startswith(STANDALONE + "."):
        return STANDALONE
    best = max((u for layer in LAYERS for u in layer if module == u or module.startswith(u + ".")), key=len)
    return best


def rank(u: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if u in layer)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, name: str | None = None) -> list[tuple[str, int, bool]]:
    """``(imported quota module, line, inside a function)`` for every import statement that runs in the file
    ``path`` (the module ``name``, by default the one its path names)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            func = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.split(".")[0] == "quota")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.split(".")[0] == "quota":
                    for alias in child.names:  # ``from quota.x import y``: y may be a module or a name
                        candidate = f"{base}.{alias.name}"
                        is_module = (ROOT.parent / Path(*candidate.split("."))).with_suffix(".py").is_file() or (
                            ROOT.parent / Path(*candidate.split(".")) / "__init__.py"
                        ).is_file()
                        found.append((candidate if is_module else base, child.lineno, in_function))
            visit(child, func)

    visit(ast.parse(path.read_text()), False)
    return found


SOURCES = sorted(ROOT.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    for path in SOURCES:
        name = module_name(path)
        assert unit(name), f"{name} is in no layer of LAYERS"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_run_one_way(path: Path):
    importer = module_name(path)
    src = unit(importer)
    bad = []
    for target, line, _ in imports(path):
        dst = unit(target)
        if src == dst or (importer, target) in ALLOWED:
            continue
        if src == STANDALONE:
            bad.append(f"line {line}: {target} (solvers imports nothing else from quota)")
        elif dst != STANDALONE and rank(dst) >= rank(src):
            bad.append(f"line {line}: {target} ({dst}, layer {rank(dst)}) from layer {rank(src)}")
    assert not bad, f"{importer} imports a higher or equal layer:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_no_function_level_quota_imports_outside_cli(path: Path):
    importer = module_name(path)
    if unit(importer) == "quota.cli" or importer == "quota.__main__":
        return
    lazy = [f"line {line}: {target}" for target, line, in_function in imports(path) if in_function]
    assert not lazy, f"{importer} imports quota modules inside functions (hiding a cycle?):\n" + "\n".join(lazy)


def test_no_import_cycles_between_modules():
    graph = {module_name(p): {t for t, _, inside in imports(p) if not inside} for p in SOURCES}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)


def test_the_checker_sees_a_violation(tmp_path):
    """The parser finds a function-level import and resolves relative imports (so the tests above can fail)."""
    fake = tmp_path / "probe.py"
    fake.write_text("from ..runtime import apply\n\ndef f():\n    from quota.testbed import model\n")
    found = imports(fake, "quota.quant.probe")
    assert ("quota.runtime.apply", 1, False) in found
    assert ("quota.testbed.model", 4, True) in found
    assert rank(unit("quota.runtime.apply")) > rank(unit("quota.quant.config"))
