"""The package's import graph: no cycle, and no module hidden by a public name.

``import_graph`` reads every ``.py`` file of ``lowprec/`` with ``ast`` and records every
module of the package that the file imports, at module top and inside functions alike:
an import in a function body still closes a cycle, it only shows later. The graph must
be acyclic, so that the layers (ops, modules, planner, conversion) each import only what
lies below.

A package attribute with a module's name must be that module: the function
``lowprec.convert`` beside a module ``lowprec/convert.py`` would hide the module
(``lowprec.convert.x`` fails) until an ``import lowprec.convert`` somewhere silently
replaced the function.

Mutations tried: ``from lowprec.conversion import convert`` inside a function of
``planner/controller.py`` makes ``test_the_import_graph_is_acyclic`` fail, naming the
cycle; ``plan = Plan`` added to ``lowprec/__init__.py`` makes
``test_no_public_name_hides_a_module`` fail, naming ``lowprec.plan``.
"""

import ast
import importlib
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "lowprec"


def modules_of(package_dir, package):
    """``{dotted name: path}`` of every module under ``package_dir`` (a package: its
    ``__init__.py``)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([package, *parts])] = path
    return out


def _imported(node, module, is_package):
    """Dotted names an import node asks for (``from p import x`` gives ``p.x`` and ``p``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        anchor = here[:len(here) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(package_dir, package):
    """``{module: set of modules of the package it imports}``, every import in the file."""
    modules = modules_of(package_dir, package)
    graph = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = _imported(node, module, is_package)
            if isinstance(node, ast.ImportFrom):
                base, *members = names
                # ``from p import x``: the module p.x if there is one, else p itself.
                edges.update(m if m in modules else base for m in members)
            else:
                edges.update(names)
        graph[module] = {m for m in edges if m in modules and m != module}
    return graph


def find_cycle(graph):
    """One cycle as a list of modules (first repeated at the end), or None."""
    state = {}                                  # absent: unseen, 1: on the path, 2: done
    path = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_is_acyclic():
    graph = import_graph(ROOT / PACKAGE, PACKAGE)
    assert "lowprec.planner.builder" in graph and "lowprec.conversion" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_an_import_inside_a_function(tmp_path):
    """The checker itself: a cycle closed by a function-level relative import is found,
    and the same package without that import is not reported."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from . import high\n    return high\n")
    (pkg / "high.py").write_text("from pkg.low import f\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.low"] == {"pkg.high"} and graph["pkg.high"] == {"pkg.low"}
    assert find_cycle(graph) in (["pkg.high", "pkg.low", "pkg.high"],
                                 ["pkg.low", "pkg.high", "pkg.low"])
    (pkg / "low.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_graph(pkg, "pkg")) is None


def test_no_public_name_hides_a_module():
    """For every package of lowprec, an attribute named like one of its modules is that
    module (``lowprec.convert`` is the function, so no module may be ``convert.py``)."""
    modules = modules_of(ROOT / PACKAGE, PACKAGE)
    packages = [m for m, path in modules.items() if path.name == "__init__.py"]
    hidden = []
    for package in packages:
        loaded = importlib.import_module(package)
        for module in modules:
            parent, _, name = module.rpartition(".")
            if parent != package:
                continue
            value = getattr(loaded, name, None)
            if value is not None and not (isinstance(value, types.ModuleType)
                                          and value.__name__ == module):
                hidden.append(f"{module} (hidden by {package}.{name} = {value!r})")
    assert not hidden, "modules hidden by a public name: " + "; ".join(hidden)
