"""The code's shape, as README's "The code" states it: packages import only the packages listed
before them (imports inside functions included, so a circle cannot hide there), no module
imports itself back through others, only tvm_bridge imports TVM, no module of pwbench/ over 400
lines and no function over 60."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1] / "pwbench"
# bottom first: each package imports only from those before it ("leaf": pwbench/*.py)
ORDER = ("leaf", "workloads", "measure", "tvm_bridge", "targets", "store", "backends", "analysis",
         "pipeline", "report", "cli")


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The pwbench modules a file imports, anywhere in it: `from package import module` is the
    module, `from module import name` the module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(MODULES)
            found |= subs or {node.module}
    return {m for m in found if m in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    if module == "pwbench.__main__":  # `python -m pwbench`: the command line
        return "cli"
    if len(parts) == 1:
        return "root"
    return "leaf" if len(parts) == 2 and MODULES[module].name != "__init__.py" else parts[1]


def test_packages_import_only_the_packages_before_them():
    upward = [(a, b) for a, targets in GRAPH.items() for b in targets
              if "root" not in (_package(a), _package(b))
              and ORDER.index(_package(b)) > ORDER.index(_package(a))]
    assert not upward, upward


def test_no_module_imports_itself_back():
    """Tarjan's strongly connected components of the module graph: every one a single module."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = list(itertools.takewhile(lambda w: w != v, reversed(stack))) + [v]
            del stack[len(stack) - len(component):]
            on_stack.difference_update(component)
            if len(component) > 1:
                circles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not circles, circles


def test_only_tvm_bridge_imports_tvm():
    importers = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("tvm", "tvm_ffi") for n in names):
                importers.append(name)
    assert importers and all(m.startswith("pwbench.tvm_bridge.") for m in importers), importers


def test_modules_and_functions_stay_short():
    long_modules = [(p.name, n) for p in MODULES.values()
                    if (n := len(p.read_text().splitlines())) > 400]
    long_functions = [(p.name, node.name, node.end_lineno - node.lineno + 1)
                      for p in MODULES.values() for node in ast.walk(ast.parse(p.read_text()))
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.end_lineno - node.lineno + 1 > 60]
    assert not long_modules and not long_functions, (long_modules, long_functions)
