"""The shape of silo_rt's imports: no cycle among its modules, no private name imported from
another module. Read from the source with ``ast`` (nothing is imported).

What counts as an import edge ``A -> B`` (A, B modules of silo_rt):

* every import statement in A: at module level, under ``if TYPE_CHECKING:`` and inside
  functions. A lazy import defers loading B, not A's dependence on it: the cycles issue #25
  removed had one side lazy (``bench/runner.py`` <-> ``bench/scaling.py``) or under
  ``TYPE_CHECKING`` (``cli/restore.py`` <-> ``cli/restore_*.py``);
* ``from P import x`` where ``x`` is a submodule of package ``P`` points at ``P.x`` alone;
  a name that is not a submodule points at ``P`` (its ``__init__``);
* Python initialises the packages that contain A before A; that implicit step is not an
  edge (a package ``__init__`` importing its own submodules is the usual shape, not a
  cycle), but A importing a name from its package's ``__init__`` is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import silo_rt

PACKAGE_ROOT = Path(silo_rt.__file__).parent
REPO = PACKAGE_ROOT.parent


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package __init__)}`` of every module under ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module name ``from <...> import`` names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")[: None if is_package else -1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: modules of the same top-level package it imports}`` (rules above)."""
    modules = _modules(root)
    graph = {}
    for name, (path, is_package) in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(node, name, is_package)
                subs = {f"{target}.{a.name}" for a in node.names} & set(modules)
                edges |= subs
                if len(subs) < len(node.names) and target in modules:
                    edges.add(target)
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest import path from ``component[0]`` back to itself, ``[a, b, ..., a]``."""
    start, inside = component[0], set(component)
    parents, frontier = {}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & inside):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    raise ValueError(f"{start} is on no cycle")


def _describe(graph, component) -> str:
    return " -> ".join(shortest_cycle(graph, component)) + f" ({len(component)} modules)"


def test_silo_rt_has_no_import_cycle():
    graph = import_graph(PACKAGE_ROOT)
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(_describe(graph, c) for c in found)


def test_the_graph_sees_lazy_type_checking_and_submodule_imports(tmp_path):
    """The rules above on a small package, so a blind analysis cannot pass the test above."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from . import a\nfrom .sub import c\n",
        "a.py": "import os\n\ndef f():\n    from .b import g\n    return g\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n",
        "sub/__init__.py": "",
        "sub/c.py": "from .. import b\nfrom ..sub import d\nfrom pkg import VERSION\n",
        "sub/d.py": "from . import c\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph == {"pkg": {"pkg.a", "pkg.sub.c"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"},
                     "pkg.sub": set(), "pkg.sub.c": {"pkg", "pkg.b", "pkg.sub.d"},
                     "pkg.sub.d": {"pkg.sub.c"}}
    assert cycles(graph) == [["pkg", "pkg.sub.c", "pkg.sub.d"], ["pkg.a", "pkg.b"]]
    assert shortest_cycle(graph, ["pkg", "pkg.sub.c", "pkg.sub.d"]) == ["pkg", "pkg.sub.c", "pkg"]
    assert cycles({"x": {"y"}, "y": {"z"}, "z": set()}) == []


def test_the_graph_of_silo_rt_has_the_edges_it_should():
    graph = import_graph(PACKAGE_ROOT)
    assert "silo_rt.bench.timers" in graph["silo_rt.bench.runner"]  # module level
    assert "silo_rt.prior" in graph["silo_rt.bench.scaling"]  # inside a function
    assert "silo_rt.bench" not in graph["silo_rt.bench.runner"]  # not its package's init
    assert "silo_rt.degradations.blur" in graph["silo_rt.degradations"]  # from . import blur


def _private_imports(paths) -> list[str]:
    """``file:line: from M import _name`` for every private name imported from a module."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                found += [f"{path.relative_to(REPO)}:{node.lineno}: from "
                          f"{'.' * node.level}{node.module or ''} import {a.name}"
                          for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


@pytest.mark.parametrize("folder", ["silo_rt", "tests", "benchmarks"])
def test_no_private_name_is_imported_from_another_module(folder):
    """A name another module needs is part of its module's interface: public, no underscore
    (tests and benchmarks included; monkeypatching a private attribute is not an import)."""
    assert _private_imports(sorted((REPO / folder).rglob("*.py"))) == []
