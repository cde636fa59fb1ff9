"""setup.py: which extension it builds, and what it does when the CUDA part cannot be.

A user's machine (Python 3.12, the CUDA build of torch from the registry) had nvcc on
PATH as a wrapper script in /usr/local/bin: torch's guess of the toolkit, the folder above
nvcc, has no headers, the CUDA compile failed, and the install went on without any
extension. Now the toolkit is found through nvcc itself, a failed CUDA build is retried
as the CPU extension, and the reason is recorded where ``lowprec info`` reads it.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup_py():
    """setup.py as a module (its ``setup()`` call runs only as a script)."""
    spec = importlib.util.spec_from_file_location("lowprec_setup_script", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _toolkit(folder):
    (folder / "include").mkdir(parents=True)
    (folder / "include" / "cuda_runtime.h").write_text("")
    (folder / "bin").mkdir()
    return folder


def _script(path, body):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_toolkit_is_found_through_a_wrapper_script(setup_py, tmp_path):
    toolkit = _toolkit(tmp_path / "cuda-13.0")
    # What /usr/local/bin/nvcc was: `exec <toolkit>/bin/nvcc "$@"`, which under --dryrun
    # names its install as TOP.
    wrapper = _script(tmp_path / "local" / "bin" / "nvcc",
                      f'[ "$1" = --dryrun ] && echo "#$ TOP={toolkit}/bin/.." >&2\nexit 0\n')
    assert setup_py._toolkit_of(str(wrapper)) == str(toolkit)


def test_toolkit_is_found_through_a_link(setup_py, tmp_path):
    toolkit = _toolkit(tmp_path / "cuda-13.0")
    real = _script(toolkit / "bin" / "nvcc", "exit 1\n")      # never needs to run
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").symlink_to(real)
    assert setup_py._toolkit_of(str(tmp_path / "bin" / "nvcc")) == str(toolkit)


def test_nvcc_without_a_toolkit_is_no_toolkit(setup_py, tmp_path):
    lone = _script(tmp_path / "bin" / "nvcc", "exit 0\n")
    assert setup_py._toolkit_of(str(lone)) is None


def _cublaslt_files(include, lib, major):
    include.mkdir(parents=True, exist_ok=True)
    (include / "cublasLt.h").write_text("")
    lib.mkdir(parents=True)
    (lib / f"libcublasLt.so.{major}").write_text("")


@pytest.mark.parametrize("where", ["toolkit", "cu13 wheel"])
def test_cublaslt_is_found_in_the_toolkit_or_the_nvidia_wheel(setup_py, tmp_path, monkeypatch,
                                                              where):
    """A toolkit installed with nvcc alone has no cuBLAS (this project's machine): the
    CUDA build of torch brings it in the nvidia/cu13 wheel, found on sys.path."""
    toolkit = _toolkit(tmp_path / "cuda-13.0")
    site = tmp_path / "site-packages"
    if where == "toolkit":
        _cublaslt_files(toolkit / "include", toolkit / "lib64", 13)
        expected = toolkit / "lib64" / "libcublasLt.so.13"
    else:
        _cublaslt_files(site / "nvidia" / "cu13" / "include", site / "nvidia" / "cu13" / "lib", 13)
        expected = site / "nvidia" / "cu13" / "lib" / "libcublasLt.so.13"
    monkeypatch.setattr(sys, "path", [str(site)])
    torch = SimpleNamespace(version=SimpleNamespace(cuda="13.0"))
    include, library, why = setup_py._cublaslt(torch, str(toolkit))
    assert (library, why) == (str(expected), None)
    assert os.path.isfile(os.path.join(include, "cublasLt.h"))


def test_cublaslt_of_another_cuda_major_is_not_taken(setup_py, tmp_path, monkeypatch):
    """torch built for CUDA 12 loads libcublasLt.so.12: a .so.13 must not be linked."""
    toolkit = _toolkit(tmp_path / "cuda-13.0")
    _cublaslt_files(toolkit / "include", toolkit / "lib64", 13)
    monkeypatch.setattr(sys, "path", [])
    torch = SimpleNamespace(version=SimpleNamespace(cuda="12.8"))
    include, library, why = setup_py._cublaslt(torch, str(toolkit))
    assert (include, library) == (None, None)
    assert "libcublasLt.so.12" in why and "nvidia/cu12" in why


@pytest.mark.parametrize("case", ["cpu torch", "cpu only", "cuda home", "no nvcc",
                                  "nvcc", "nvcc without toolkit"])
def test_which_extension_is_built(setup_py, tmp_path, monkeypatch, case):
    for name in ("CUDA_HOME", "CUDA_PATH", "LOWPREC_CPU_ONLY", "LOWPREC_REQUIRE_EXT"):
        monkeypatch.delenv(name, raising=False)
    torch = SimpleNamespace(version=SimpleNamespace(cuda=None if case == "cpu torch" else "13.0"))
    toolkit = _toolkit(tmp_path / "cuda")
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    if case == "nvcc":
        (tmp_path / "path").mkdir()
        (tmp_path / "path" / "nvcc").symlink_to(_script(toolkit / "bin" / "nvcc", "exit 1\n"))
    if case == "nvcc without toolkit":
        _script(tmp_path / "path" / "nvcc", "exit 0\n")
    if case == "cpu only":
        monkeypatch.setenv("LOWPREC_CPU_ONLY", "1")
        monkeypatch.setenv("CUDA_HOME", str(toolkit))     # the switch wins
    if case == "cuda home":
        monkeypatch.setenv("CUDA_HOME", str(toolkit))
    home, why = setup_py._cuda_toolkit(torch)
    expected = {"cpu torch": (None, "the installed torch has no CUDA"),
                "cpu only": (None, "LOWPREC_CPU_ONLY=1 asked for the CPU extension alone"),
                "cuda home": (str(toolkit), None),
                "no nvcc": (None, "nvcc is not on PATH and CUDA_HOME is not set"),
                "nvcc": (str(toolkit), None)}
    if case == "nvcc without toolkit":
        assert home is None and "no CUDA toolkit" in why and "CUDA_HOME" in why
        monkeypatch.setenv("LOWPREC_REQUIRE_EXT", "1")
        with pytest.raises(RuntimeError, match="LOWPREC_REQUIRE_EXT=1"):
            setup_py._cuda_toolkit(torch)
    else:
        assert (home, why) == expected[case]


# A torch that claims CUDA, so that setup.py attempts the CUDA extension with the broken
# toolkit below; then the real build command.
BUILD = """
import runpy, sys, torch
torch.version.cuda = "13.0"
sys.argv = ["setup.py", "build_ext", "--inplace"]
runpy.run_path("setup.py", run_name="__main__")
"""


@pytest.fixture(scope="module")
def broken_cuda_build(tmp_path_factory):
    """A copy of the sources built with a CUDA toolkit whose nvcc fails."""
    work = tmp_path_factory.mktemp("build")
    toolkit = _toolkit(work / "cuda")
    _script(toolkit / "bin" / "nvcc", "echo 'nvcc: broken on purpose' >&2\nexit 1\n")
    tree = work / "tree"
    for part in ("csrc", "lowprec", "kernels"):
        shutil.copytree(ROOT / part, tree / part,
                        ignore=shutil.ignore_patterns("*.so", "_build_info.json",
                                                      "__pycache__"))
    for part in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, tree / part)
    env = {**os.environ, "CUDA_HOME": str(toolkit), "MAX_JOBS": "2"}
    for name in ("LOWPREC_REQUIRE_EXT", "LOWPREC_CPU_ONLY", "LOWPREC_NO_EXT"):
        env.pop(name, None)

    def build(**extra):
        return subprocess.run([sys.executable, "-c", BUILD], cwd=tree, env={**env, **extra},
                              capture_output=True, text=True, timeout=600)
    return tree, env, build


def test_require_ext_makes_a_failed_cuda_build_an_error(broken_cuda_build):
    tree, _, build = broken_cuda_build
    result = build(LOWPREC_REQUIRE_EXT="1")
    assert result.returncode != 0
    assert "nvcc" in result.stderr
    assert not list((tree / "lowprec").glob("_lowprec_C*.so"))


def test_a_failed_cuda_build_leaves_the_cpu_extension_and_says_why(broken_cuda_build):
    tree, env, build = broken_cuda_build
    result = build()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING: building the CUDA kernels failed" in result.stderr
    info = json.loads((tree / "lowprec" / "_build_info.json").read_text())
    assert info["extension"] == "cpu" and info["failed"] is None
    assert info["no_cuda"].startswith("the CUDA build failed")
    # The copy's lowprec (first on the path) loads its CPU kernels and tells why CUDA's
    # are missing, as `lowprec info` prints it.
    probe = ("import torch; torch.version.cuda = '13.0'; "     # the build's torch
             "import lowprec, lowprec._C as c; "
             "print(lowprec.available('cpu', return_reason=True, device_type='cpu')); "
             "print(c.build_note())")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=tree, capture_output=True,
                            text=True, env={**env, "PYTHONPATH": str(tree)}, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    available, note = loaded.stdout.splitlines()[:2]
    assert available == "(True, None)"
    assert note.startswith("the extension was built without its CUDA kernels: the CUDA "
                           "build failed")
