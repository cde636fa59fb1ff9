"""Build script. The Python package needs no compilation; the compiled extension
(csrc/ -> lowprec._lowprec_C) is optional.

What gets built:
* torch built with CUDA and nvcc on PATH (or CUDA_HOME): the CUDA extension, which holds
  the GPU kernels for sm_90a and sm_100a (plus compute_90 PTX for newer GPUs) *and* the
  CPU kernels. No GPU is needed to build it.
* otherwise: the CPU extension (about 20 s of g++ on 2 cores).
* LOWPREC_NO_EXT=1: nothing; lowprec runs on its reference (and Triton) backends.

A failed compile does not fail `pip install`: the package still works without the
extension, and `lowprec.available(return_reason=True)` says the cpu/cuda backends are
missing and why (lowprec/_C.py). LOWPREC_REQUIRE_EXT=1 turns a failed build into a
failed install (for CI; tests/csrc also fails, rather than skips, without the extension
unless LOWPREC_NO_EXT=1), so a broken extension cannot hide behind the fallback.

Build with the torch already installed: `pip install --no-build-isolation -e .`
(MAX_JOBS limits parallel compile jobs).
"""

import os
import shutil
import sys

from setuptools import find_packages, setup

# Every package under lowprec/ (found, so a new subpackage cannot be left out of the
# wheel), plus the Triton kernels of kernels/ as lowprec.kernels.
PACKAGES = find_packages(include=["lowprec", "lowprec.*"]) + ["lowprec.kernels"]

CPU_SOURCES = ["csrc/bindings.cpp", "csrc/quantize_cpu.cpp"]
CUDA_SOURCES = ["csrc/quantize.cu", "csrc/cuda_ops.cpp"]

# No fast-math anywhere, and no FMA contraction: the scale chain and the RHT are specified
# one correctly rounded FP32 operation at a time (NUMERICS 2, 6). -fno-trapping-math
# changes no value (lowprec never reads FP exception flags); it lets the compiler compute
# both sides of a select, which is what turns the per-element SR loop into vector code.
CXX_FLAGS = ["-O3", "-g0", "-std=c++20", "-ffp-contract=off", "-fno-fast-math",
             "-fno-trapping-math"]


def _nvcc_flags():
    """csrc/nvcc_flags.txt (shared with .ci/nvcc_check.sh): one flag per line, # comments."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc",
                           "nvcc_flags.txt")) as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return [line for line in lines if line]


def _log(message):
    print(f"lowprec setup: {message}", file=sys.stderr)


def _cuda_wanted(torch):
    if torch.version.cuda is None:
        return False, "torch has no CUDA"
    if os.environ.get("CUDA_HOME") is None and shutil.which("nvcc") is None:
        return False, "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    return True, None


def extension_modules():
    """(ext_modules, cmdclass) for this machine, or ([], {}) when nothing is built."""
    if os.environ.get("LOWPREC_NO_EXT") == "1":
        _log("LOWPREC_NO_EXT=1: building no compiled extension")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as err:
        _log(f"torch is not importable ({err}); building no compiled extension "
             "(install torch first and use --no-build-isolation)")
        return [], {}

    class OptionalBuildExtension(cpp_extension.BuildExtension):
        """torch's BuildExtension, but a failed compile only warns (see module doc).

        A failed extension is also dropped from ``self.extensions``, so that the in-place
        copy (``--inplace``, editable installs) and the wheel's file list do not look for
        the library that was never built.
        """

        def build_extensions(self):
            self._failed = []
            try:  # torch's checks before compiling (compiler found, ABI) can fail too
                super().build_extensions()
            except Exception as err:
                self._give_up(self.extensions, err)
            self.extensions = [e for e in self.extensions if e not in self._failed]

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as err:  # compiler errors come as several types
                self._give_up([ext], err)

        def _give_up(self, extensions, err):
            if os.environ.get("LOWPREC_REQUIRE_EXT") == "1":
                raise err
            self._failed.extend(extensions)
            names = ", ".join(e.name for e in extensions)
            _log(f"WARNING: building {names} failed ({type(err).__name__}: {err}); "
                 "lowprec installs without it and lowprec.available(return_reason=True) "
                 "reports it. Set LOWPREC_REQUIRE_EXT=1 to make this an error.")

    with_cuda, why_not = _cuda_wanted(torch)
    common = dict(include_dirs=[os.path.abspath("csrc")])
    if with_cuda:
        _log("building the CUDA extension (GPU kernels for sm_90a/sm_100a + CPU kernels)")
        ext = cpp_extension.CUDAExtension(
            "lowprec._lowprec_C", CPU_SOURCES + CUDA_SOURCES,
            define_macros=[("LOWPREC_WITH_CUDA", "1")],
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": _nvcc_flags()}, **common)
    else:
        _log(f"building the CPU extension ({why_not})")
        ext = cpp_extension.CppExtension(
            "lowprec._lowprec_C", CPU_SOURCES,
            extra_compile_args={"cxx": CXX_FLAGS}, **common)
    return [ext], {"build_ext": OptionalBuildExtension}


ext_modules, cmdclass = extension_modules()

setup(
    packages=PACKAGES,
    # Triton kernels live in kernels/ at the top of the tree (project layout) and are
    # installed as the subpackage lowprec.kernels.
    package_dir={"lowprec.kernels": "kernels"},
    # The planner's default device cost table (lowprec/planner/cost.py reads it).
    package_data={"lowprec.planner": ["device_costs.json"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
