"""Run from the repository root, the tree must not shadow installed packages.

``python -m pytest``, ``python -m lowprec`` and any script run from the root put the root
on ``sys.path`` first. The root holds ``kernels/`` (lowprec's Triton sources, installed
as ``lowprec.kernels``), and a package named ``kernels`` exists on PyPI (Hugging Face's,
which transformers imports at model import): ``import kernels`` must find that one.
The root's ``bench/`` and ``experiments/`` hold no Python (the code is
``lowprec.bench`` and ``lowprec.experiments``), so installed PyPI packages of those
names are the ones imported too.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def installed_kernels(tmp_path):
    """A site directory holding a package ``kernels`` that says who it is."""
    package = tmp_path / "kernels"
    package.mkdir()
    (package / "__init__.py").write_text("WHO = 'the installed kernels'\n")
    (package / "layer.py").write_text("WHAT = 'a submodule of the installed kernels'\n")
    return tmp_path


def _run_from_root(args, site_dir=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if site_dir is not None:
        env["PYTHONPATH"] = str(site_dir)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("how", [
    ["-c", "import kernels, kernels.layer; print(kernels.WHO); print(kernels.layer.WHAT)"],
    # -m puts the current directory first on sys.path, as `python -m pytest` does.
    ["-m", "kernels.layer"],
])
def test_import_kernels_from_the_root_finds_the_installed_package(installed_kernels, how):
    result = _run_from_root(how, installed_kernels)
    assert result.returncode == 0, result.stderr
    if how[0] == "-c":
        assert result.stdout.split("\n")[:2] == ["the installed kernels",
                                                  "a submodule of the installed kernels"]


def test_import_kernels_from_the_root_without_one_installed_fails_as_if_absent():
    # -S: no site-packages, so no `kernels` is installed; the root is still on sys.path.
    result = _run_from_root(["-S", "-c", "import kernels"])
    assert result.returncode != 0
    assert "ModuleNotFoundError: No module named 'kernels'" in result.stderr


def test_lowprec_kernels_still_imports_from_the_root(installed_kernels):
    result = _run_from_root(
        ["-c", "import kernels, lowprec.kernels as lk; print(kernels.WHO); "
               "print(lk.__name__)"], installed_kernels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["the installed kernels", "lowprec.kernels"]


@pytest.mark.parametrize("name", ["bench", "experiments"])
def test_installed_bench_and_experiments_win_over_the_roots_folders(tmp_path, name):
    """A folder without ``__init__.py`` is at most a namespace package, which any
    installed package of the same name outranks; a stray ``__init__.py`` there would
    shadow the installed one from the root."""
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text(f"WHO = 'the installed {name}'\n")
    assert (ROOT / name).is_dir()
    result = _run_from_root(["-c", f"import {name}; print({name}.WHO)"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"the installed {name}"
    result = _run_from_root(["-m", "lowprec.bench.bench_launches", "--help"])
    assert result.returncode == 0 and "--capability" in result.stdout, result.stderr
