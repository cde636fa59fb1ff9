"""The import graph of every module the wheel installs: layers, direction, no cycle, and
no module hidden by a public name.

``installed_modules`` finds what the wheel installs the way setup.py packages it: every
package below ``lowprec/`` plus each ``package_dir`` entry of setup.py (``kernels/`` as
``lowprec.kernels``). ``import_graph`` reads each file with ``ast`` and records every
module of the package it imports, at module top and inside functions alike: an import
in a function body still closes a cycle or points up, it only shows later.

``LAYERS`` is the table of docs/architecture.md (``test_the_document_holds_the_table``
keeps the two equal): each row names its modules by prefix (``lowprec.planner`` is that
package and everything in it; the longest prefix decides, so ``lowprec.kernels.backend``
sits in its own row above the rest of ``lowprec.kernels``) and the layers it may import.
A module may import its own layer only where the row says so: the backends do not import
one another.

Mutations tried: ``from lowprec.kernels import backend`` added inside a function of
``lowprec/backends/cuda.py`` makes ``test_imports_point_down`` fail, naming the edge
``lowprec.backends.cuda -> lowprec.kernels.backend (backends -> backends)``; ``import
torch`` added to ``lowprec/shapes.py`` makes ``test_the_core_is_torch_free`` fail;
``from lowprec.conversion import convert`` inside a function of
``planner/controller.py`` makes ``test_the_import_graph_is_acyclic`` fail, naming the
cycle; ``plan = Plan`` added to ``lowprec/__init__.py`` makes
``test_no_public_name_hides_a_module`` fail, naming ``lowprec.plan``.
"""

import ast
import importlib
import pkgutil
import re
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "lowprec"
DOC = ROOT / "docs" / "architecture.md"

# (layer, module prefixes, layers it may import), lowest first. docs/architecture.md holds
# the same table.
LAYERS = [
    ("core", ["lowprec.names", "lowprec.checks", "lowprec.shapes", "lowprec.copies"],
     ["core"]),
    ("spec", ["lowprec.reference"], ["core"]),
    ("kernels", ["lowprec.kernels", "lowprec._C", "lowprec.blackwell"],
     ["core", "spec", "kernels"]),
    ("adapter tensors", ["lowprec.backends.tensors"], ["core"]),
    ("adapters", ["lowprec.backends.extension"],
     ["core", "spec", "kernels", "adapter tensors"]),
    ("backends", ["lowprec.backends.cpu", "lowprec.backends.cuda",
                  "lowprec.backends.reference", "lowprec.kernels.backend"],
     ["core", "spec", "kernels", "adapter tensors", "adapters"]),
    ("variants", ["lowprec.kernels.variants"],
     ["core", "kernels", "adapters", "backends"]),
    ("registry", ["lowprec.backends"], ["core", "variants"]),
    ("utilities", ["lowprec.device", "lowprec.progress", "lowprec.table",
                   "lowprec.bench_schema"],
     ["core", "utilities"]),
    ("ops", ["lowprec.ops", "lowprec.formats", "lowprec.dispatch"],
     ["core", "spec", "registry", "ops"]),
    ("modules", ["lowprec.recipe", "lowprec.sr_keys", "lowprec.linear_layer",
                 "lowprec.grouped", "lowprec.conv1d", "lowprec.moe", "lowprec.plan",
                 "lowprec.discovery", "lowprec.policy", "lowprec.planner",
                 "lowprec.module_swap", "lowprec.conversion", "lowprec.disable",
                 "lowprec.weight_reuse"],
     ["core", "spec", "registry", "utilities", "ops", "modules"]),
    ("package", ["lowprec"], ["core", "spec", "registry", "utilities", "ops", "modules"]),
    ("tools", ["lowprec.cli", "lowprec.__main__", "lowprec.demo", "lowprec.bench",
               "lowprec.experiments", "lowprec.quant_report", "lowprec.launch_trace"],
     ["core", "spec", "kernels", "adapter tensors", "adapters", "backends", "variants",
      "registry", "utilities", "ops", "modules", "package", "tools"]),
]
# The root prefix names the package's own __init__ only (the public names); any other
# module needs a row of its own, so a new one cannot slip into a layer unseen.
EXACT = {"lowprec"}


def installed_packages(root=ROOT):
    """``{package: folder}`` of the packages at the roots of the wheel: ``lowprec`` and
    every ``package_dir`` entry of setup.py."""
    package_dir = {}
    for node in ast.walk(ast.parse((root / "setup.py").read_text())):
        if isinstance(node, ast.keyword) and node.arg == "package_dir":
            package_dir = ast.literal_eval(node.value)
    return {PACKAGE: root / PACKAGE, **{p: root / d for p, d in package_dir.items()}}


def modules_of(package_dir, package):
    """``{dotted name: path}`` of ``package`` and every Python module and package below it
    (a folder without ``__init__.py`` is not a package and not installed, as for setup.py's
    ``find_packages``; the compiled extension, which imports no Python, is left out)."""
    out = {package: package_dir / "__init__.py"}
    for info in pkgutil.iter_modules([str(package_dir)]):
        name = f"{package}.{info.name}"
        if info.ispkg:
            out.update(modules_of(package_dir / info.name, name))
        elif (package_dir / f"{info.name}.py").is_file():
            out[name] = package_dir / f"{info.name}.py"
    return out


def installed_modules(root=ROOT):
    """``{module: path}`` of every module the wheel installs."""
    out = {}
    for package, folder in installed_packages(root).items():
        out.update(modules_of(folder, package))
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


def _imports(path, module):
    """Every dotted name the file of ``module`` imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, _imported(node, module, is_package)


def import_graph(modules):
    """``{module: set of modules of ``modules`` it imports}``, every import in the file."""
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node, names in _imports(path, module):
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


def layer_of(module, layers=LAYERS):
    """The layer of ``module``: its row with the longest matching prefix, or None."""
    best, length = None, -1
    for name, prefixes, _ in layers:
        for prefix in prefixes:
            matches = module == prefix or (prefix not in EXACT
                                           and module.startswith(prefix + "."))
            if matches and len(prefix) > length:
                best, length = name, len(prefix)
    return best


def wrong_way(graph, layers=LAYERS):
    """``["a -> b (layer of a -> layer of b)", ...]``: each import the table forbids (a
    module in no layer is ``test_every_installed_module_has_a_layer``'s to report)."""
    allowed = {name: set(may) for name, _, may in layers}
    bad = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module, layers)
        if mine is None:
            continue
        for target in sorted(targets):
            theirs = layer_of(target, layers)
            if theirs not in allowed[mine]:
                bad.append(f"{module} -> {target} ({mine} -> {theirs})")
    return bad


def test_every_installed_module_has_a_layer():
    modules = installed_modules()
    assert "lowprec.kernels.quantize_row_col" in modules and "lowprec.backends.cpu" in modules
    loose = sorted(m for m in modules if layer_of(m) is None)
    assert not loose, ("modules in no layer (add a row or a prefix to LAYERS and to "
                       f"docs/architecture.md): {loose}")


def test_imports_point_down():
    bad = wrong_way(import_graph(installed_modules()))
    assert not bad, "imports the layer table forbids:\n" + "\n".join(bad)


def test_the_core_is_torch_free():
    """The core imports the standard library and itself, nothing else (no torch): the
    planner's solver and the kernels' launchers both take their facts from it."""
    core = [prefix for name, prefixes, _ in LAYERS if name == "core" for prefix in prefixes]
    modules = installed_modules()
    bad = []
    for module in core:
        for node, names in _imports(modules[module], module):
            if isinstance(node, ast.ImportFrom):
                base, *members = names
                names = [m if m in modules else base for m in members]
            for name in names:
                if (name.split(".")[0] not in sys.stdlib_module_names
                        and layer_of(name) != "core"):
                    bad.append(f"{module} imports {name}")
    assert not bad, bad


def test_the_document_holds_the_table():
    """docs/architecture.md's layer table lists the same rows, prefixes and allowed
    imports as ``LAYERS``, in the same order."""
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and cells[0].startswith("**"):
            rows.append((cells[0].strip("*"), re.findall(r"`([\w.]+)`", cells[1]),
                         [c.strip() for c in cells[2].split(",") if c.strip()]))
    assert rows == [(n, p, m) for n, p, m in LAYERS]


def test_the_checks_see_an_upward_import_inside_a_function(tmp_path):
    """The checker itself: an upward import in a function body is reported with its
    layers, and a downward one is not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from . import high\n    return high\n")
    (pkg / "high.py").write_text("from pkg.low import f\n")
    layers = [("low", ["pkg.low"], ["low"]), ("high", ["pkg.high"], ["low"]),
              ("top", ["pkg"], ["low", "high"])]
    graph = import_graph(modules_of(pkg, "pkg"))
    assert graph["pkg.low"] == {"pkg.high"} and graph["pkg.high"] == {"pkg.low"}
    assert wrong_way(graph, layers) == ["pkg.low -> pkg.high (low -> high)"]
    assert find_cycle(graph) in (["pkg.high", "pkg.low", "pkg.high"],
                                 ["pkg.low", "pkg.high", "pkg.low"])
    (pkg / "low.py").write_text("def f():\n    return 1\n")
    graph = import_graph(modules_of(pkg, "pkg"))
    assert wrong_way(graph, layers) == [] and find_cycle(graph) is None


def test_the_import_graph_is_acyclic():
    graph = import_graph(installed_modules())
    assert "lowprec.kernels.backend" in graph and "lowprec.conversion" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_public_name_hides_a_module():
    """For every installed package, an attribute named like one of its modules is that
    module (``lowprec.convert`` is the function, so no module may be ``convert.py``)."""
    modules = installed_modules()
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
