"""The package boundary (issue 24): code reaches code by importing it, never by path.

* No tracked ``.py`` file edits ``sys.path``, except the tests' own helper modules named
  in ``SYS_PATH_HELPERS``: a benchmark or an experiment that puts the repository root on
  ``sys.path`` only works from a source checkout.
* The benchmarks and experiments are modules of the package (``lowprec.bench``,
  ``lowprec.experiments``), shipped in the wheel; the repository's ``bench/`` and
  ``experiments/`` keep results, notes and shell scripts only, so no top-level
  ``bench`` or ``experiments`` package (both names exist on PyPI) can be imported from
  the root.

Mutation tried: ``sys.path.insert(0, ".")`` added to lowprec/bench/bench_amax.py fails
``test_no_sys_path_edits``, naming the file and line.
"""

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The tests' own helpers that may put a test folder on sys.path (pytest's
# --import-mode=importlib adds none): file -> what needs it.
SYS_PATH_HELPERS = {
    "tests/csrc/conftest.py": "the csrc tests import their helper module csrc_helpers",
    "tests/training/test_distributed.py": "spawn_with_timeout: the spawned ranks import "
                                          "the test module by name",
}

_MUTATORS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__",
             "__delitem__", "__iadd__"}


def _is_sys_path(node):
    return (isinstance(node, ast.Attribute) and node.attr == "path"
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


def sys_path_edits(source, filename="<source>"):
    """Line numbers of the ``sys.path`` edits in ``source``: a mutating call on it, an
    assignment to it or to an item of it, ``from sys import path``, ``site.addsitedir``
    and pytest's ``monkeypatch.syspath_prepend``."""
    lines = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if ((func.attr in _MUTATORS and _is_sys_path(func.value))
                    or func.attr in ("addsitedir", "syspath_prepend")):
                lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [
                node.target]
            for target in targets:
                if _is_sys_path(target) or (isinstance(target, ast.Subscript)
                                            and _is_sys_path(target.value)):
                    lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "sys":
            if any(alias.name == "path" for alias in node.names):
                lines.append(node.lineno)
    return sorted(lines)


def tracked_python_files():
    """The checkout's .py files that git tracks or would add (not ignored ones)."""
    try:
        done = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                               "--", "*.py"], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
    except OSError:
        done = None
    if done is None or done.returncode != 0:
        pytest.skip("not a git checkout (an sdist or a wheel): nothing tracked to scan")
    return sorted({name for name in done.stdout.splitlines() if (ROOT / name).is_file()})


def test_the_checker_finds_each_kind_of_edit_and_nothing_else():
    source = "\n".join([
        "import sys, site",
        "sys.path.insert(0, 'x')",              # 2
        "sys.path.append('x')",                 # 3
        "sys.path[:0] = ['x']",                 # 4
        "sys.path = ['x']",                     # 5
        "sys.path += ['x']",                    # 6
        "from sys import path",                 # 7
        "site.addsitedir('x')",                 # 8
        "def t(monkeypatch):",
        "    monkeypatch.syspath_prepend('x')",  # 10
        "print(sys.path, list(sys.path))",      # reading it is fine
        "# sys.path.insert(0, 'x')",            # so is a comment
        "text = 'sys.path.insert(0, x)'",       # and a string
        "other.path.insert(0, 'x')",            # and another object's path
    ])
    assert sys_path_edits(source) == [2, 3, 4, 5, 6, 7, 8, 10]


def test_no_sys_path_edits():
    files = tracked_python_files()
    assert "lowprec/cli/__init__.py" in files and "lowprec/bench/common.py" in files
    found = [f"{name}:{line}" for name in files if name not in SYS_PATH_HELPERS
             for line in sys_path_edits((ROOT / name).read_text(), name)]
    assert not found, ("sys.path edited outside the tests' helpers (import the module "
                       "from its package instead): " + ", ".join(found))
    for helper in SYS_PATH_HELPERS:          # a stale allowance would hide nothing
        assert helper in files, f"{helper} is gone: drop it from SYS_PATH_HELPERS"


@pytest.mark.parametrize("folder", ["bench", "experiments"])
def test_bench_and_experiments_hold_no_python(folder):
    """Their code is lowprec.bench / lowprec.experiments: importable, in the wheel."""
    strays = sorted(str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*.py"))
    assert not strays, f"Python outside the package (move it under lowprec/): {strays}"
