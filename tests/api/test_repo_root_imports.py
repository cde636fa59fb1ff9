"""Run from the repository root, the tree must not shadow installed packages.

``python -m pytest``, ``python -m lowprec`` and any script run from the root put the root
on ``sys.path`` first. The root holds ``kernels/`` (lowprec's Triton sources, installed
as ``lowprec.kernels``), and a package named ``kernels`` exists on PyPI (Hugging Face's,
which transformers imports at model import): ``import kernels`` must find that one.
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
