"""Build script. The Python package needs no compilation; the compiled extension
(csrc/ -> lowprec._lowprec_C) is optional.

What gets built:
* torch built with CUDA and nvcc found: the CUDA extension, which holds the GPU kernels
  for sm_90a and sm_100a (plus compute_90 PTX for newer GPUs) *and* the CPU kernels. No
  GPU is needed to build it. The toolkit is ``CUDA_HOME`` (or ``CUDA_PATH``) when set,
  else found from ``nvcc`` on PATH, following wrappers and links (``nvcc --dryrun``
  names its own install); torch's own guess, the folder above nvcc's, fails for a
  ``/usr/local/bin/nvcc`` wrapper script. Its one cuBLASLt op (``nvfp4_gemm_values``)
  is built where cuBLASLt's header and library are found (``_cublaslt``: the toolkit,
  or the NVIDIA wheel CUDA torch brings); elsewhere the CUDA extension builds without it.
* otherwise, or when the CUDA build fails: the CPU extension alone (about 20 s of g++
  on 2 cores), with a warning.
* LOWPREC_CPU_ONLY=1: the CPU extension alone, on purpose.
* LOWPREC_NO_EXT=1: nothing; lowprec runs on its reference (and Triton) backends.

What was built, and why not more, is recorded in ``lowprec/_build_info.json`` beside the
extension: ``lowprec info`` and the demo's first line show it, since ``pip install``
shows a build's warnings only with ``-v``. A failed compile does not fail
``pip install`` (the package still works without the extension, and
``lowprec.available(return_reason=True)`` says why); LOWPREC_REQUIRE_EXT=1 turns any
failure, the CUDA part's included, into a failed install (CI sets it), so a broken
extension cannot hide behind the fallback.

Build with the torch already installed: `pip install --no-build-isolation -e .`
(MAX_JOBS limits parallel compile jobs).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import find_packages, setup

# Every package under lowprec/ (found, so a new subpackage cannot be left out of the
# wheel), plus the Triton kernels of kernels/ as lowprec.kernels.
PACKAGES = find_packages(include=["lowprec", "lowprec.*"]) + ["lowprec.kernels"]

EXTENSION = "lowprec._lowprec_C"
BUILD_INFO = "_build_info.json"      # read by lowprec/_C.py
CPU_SOURCES = ["csrc/bindings.cpp", "csrc/quantize_cpu.cpp"]
CUDA_SOURCES = ["csrc/quantize.cu", "csrc/cuda_ops.cpp", "csrc/nvfp4_gemm_values.cu"]
# The CUDA op that calls cuBLASLt: built only where its header and library are found.
CUBLASLT_SOURCES = ["csrc/nvfp4_gemm_values_cuda.cpp"]

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


def _warn_loudly(message):
    bar = "*" * 78
    _log(f"\n{bar}\nWARNING: {message}\n{bar}")


def _require_ext():
    return os.environ.get("LOWPREC_REQUIRE_EXT") == "1"


def _is_toolkit(folder):
    return os.path.isfile(os.path.join(folder, "include", "cuda_runtime.h"))


def _toolkit_of(nvcc):
    """The CUDA toolkit folder that ``nvcc`` belongs to, or None.

    The folder above the real nvcc binary, else what ``nvcc --dryrun`` calls TOP (nvcc
    prints its own install even when reached through a wrapper script).
    """
    guess = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    if _is_toolkit(guess):
        return guess
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.cu")
        open(probe, "w").close()
        try:
            out = subprocess.run([nvcc, "--dryrun", "-c", probe, "-o", probe + ".o"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("#$ TOP="):
            top = os.path.normpath(line[len("#$ TOP="):].strip())
            return top if _is_toolkit(top) else None
    return None


def _cuda_toolkit(torch):
    """(CUDA_HOME to build with, None) or (None, why the CUDA kernels are not built).

    Raises under LOWPREC_REQUIRE_EXT=1 when nvcc is there but its toolkit is not: a
    CUDA build was meant and cannot happen.
    """
    if os.environ.get("LOWPREC_CPU_ONLY") == "1":
        return None, "LOWPREC_CPU_ONLY=1 asked for the CPU extension alone"
    if torch.version.cuda is None:
        return None, "the installed torch has no CUDA"
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            return os.environ[variable], None
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None, "nvcc is not on PATH and CUDA_HOME is not set"
    home = _toolkit_of(nvcc)
    if home is None:
        why = (f"no CUDA toolkit (include/cuda_runtime.h) found for {nvcc}; set CUDA_HOME "
               "to the toolkit's folder")
        if _require_ext():
            raise RuntimeError(f"LOWPREC_REQUIRE_EXT=1: the CUDA extension cannot be "
                               f"built: {why}")
        _warn_loudly(f"{why}. Building the CPU extension alone.")
        return None, why
    return home, None


def _cublaslt(torch, cuda_home):
    """(include folder, library file, None) of cuBLASLt for the installed torch's CUDA, or
    (None, None, why not).

    Looked for in the toolkit, then in the NVIDIA wheels that a CUDA build of torch from
    the package registry installs (``nvidia/cu13`` for CUDA 13, ``nvidia/cublas`` for 12):
    a toolkit installed with nvcc alone has no cuBLAS. The library is the one of torch's
    CUDA major version (``libcublasLt.so.<major>``), the soname torch itself loads.
    """
    major = torch.version.cuda.split(".")[0]
    name = f"libcublasLt.so.{major}"
    folders = [(os.path.join(cuda_home, "include"), os.path.join(cuda_home, lib))
               for lib in ("lib64", "lib")]
    for site in sys.path:
        for wheel in (f"cu{major}", "cublas"):
            root = os.path.join(site, "nvidia", wheel)
            folders.append((os.path.join(root, "include"), os.path.join(root, "lib")))
    for include, lib in folders:
        if (os.path.isfile(os.path.join(include, "cublasLt.h"))
                and os.path.isfile(os.path.join(lib, name))):
            return include, os.path.join(lib, name), None
    return None, None, (f"no cublasLt.h with {name} in the toolkit ({cuda_home}) or in an "
                        f"nvidia/cu{major} or nvidia/cublas wheel")


def _cuda_extension(cpp_extension, torch, cuda_home):
    """The CUDA extension, with the cuBLASLt op where cuBLASLt is found; and why not."""
    include, library, no_cublaslt = _cublaslt(torch, cuda_home)
    sources, includes, link = CPU_SOURCES + CUDA_SOURCES, [os.path.abspath("csrc")], []
    if include is not None:
        sources += CUBLASLT_SOURCES
        includes.append(include)
        # The library by its path (a wheel ships no unversioned libcublasLt.so), found at
        # run time in the folder it was built against or, first, as the copy torch loaded.
        link = [library, f"-Wl,-rpath,{os.path.dirname(library)}"]
        _log(f"cuBLASLt: {library}")
    else:
        _log(f"building without the cuBLASLt op nvfp4_gemm_values: {no_cublaslt}")
    ext = cpp_extension.CUDAExtension(
        EXTENSION, sources, define_macros=[("LOWPREC_WITH_CUDA", "1")],
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": _nvcc_flags()},
        include_dirs=includes, extra_link_args=link)
    return ext, no_cublaslt


def _cpu_extension(cpp_extension):
    return cpp_extension.CppExtension(
        EXTENSION, CPU_SOURCES, extra_compile_args={"cxx": CXX_FLAGS},
        include_dirs=[os.path.abspath("csrc")])


def extension_modules():
    """(ext_modules, cmdclass) for this machine, or ([], {}) when nothing is built."""
    if os.environ.get("LOWPREC_NO_EXT") == "1":
        _log("LOWPREC_NO_EXT=1: building no compiled extension")
        return [], {}
    try:
        import torch
    except ImportError as err:
        _log(f"torch is not importable ({err}); building no compiled extension "
             "(install torch first and use --no-build-isolation)")
        return [], {}
    cuda_home, no_cuda = _cuda_toolkit(torch)
    no_cublaslt = None      # why the CUDA extension has no cuBLASLt op (set below)
    if cuda_home is not None:
        # torch reads CUDA_HOME once, when cpp_extension is first imported.
        os.environ["CUDA_HOME"] = cuda_home
    from torch.utils import cpp_extension
    if cuda_home is not None:
        cpp_extension.CUDA_HOME = cuda_home

    class OptionalBuildExtension(cpp_extension.BuildExtension):
        """torch's BuildExtension with two fallbacks (see the module doc).

        A failed CUDA build is retried as the CPU extension alone; a failed CPU build
        installs no extension. Either way it warns, and ``_build_info.json`` beside the
        extension records what was built and why not more.
        """

        def build_extensions(self):
            info = {"extension": "cuda" if cuda_home else "cpu", "cuda_home": cuda_home,
                    "no_cuda": no_cuda, "no_cublaslt": no_cublaslt, "failed": None,
                    "torch": torch.__version__}
            error = self._try_build()
            if error is not None and cuda_home is not None:
                if _require_ext():
                    raise error
                info.update(extension="cpu", no_cuda=f"the CUDA build failed: {error}",
                            no_cublaslt=None)
                _warn_loudly(f"building the CUDA kernels failed ({error}); building the "
                             "CPU extension alone. `lowprec info` shows this; set "
                             "LOWPREC_REQUIRE_EXT=1 to make it an error, or "
                             "LOWPREC_CPU_ONLY=1 to build for the CPU on purpose.")
                # The same Extension object, made CPU-only: setuptools attached its
                # build state to it when the command was set up.
                ext, = self.extensions
                cpu = _cpu_extension(cpp_extension)
                vars(ext).update({k: v for k, v in vars(cpu).items() if not k.startswith("_")})
                error = self._try_build()
            if error is not None:
                if _require_ext():
                    raise error
                info.update(extension=None, failed=str(error))
                _warn_loudly(f"building {EXTENSION} failed ({error}); lowprec installs "
                             "without it, on its reference (and Triton) backends. "
                             "Set LOWPREC_REQUIRE_EXT=1 to make this an error.")
                # Nothing was built: the in-place copy (editable installs) and the
                # wheel's file list must not look for the library.
                self.extensions = []
            self._info = info

        def run(self):
            self._info = None
            super().run()
            if self._info is not None:     # after an in-place build was copied back
                self._write_build_info(self._info)

        def _try_build(self):
            """None if the build succeeded, else the error (a compiler's, or torch's
            checks before compiling); torch's patches of the compiler are undone."""
            saved = dict(vars(self.compiler))
            try:
                super().build_extensions()
                return None
            except Exception as err:  # compiler errors come as several types
                vars(self.compiler).clear()
                vars(self.compiler).update(saved)
                return RuntimeError(f"{type(err).__name__}: {err}")

        def _write_build_info(self, info):
            folders = {os.path.join(os.path.abspath(self.build_lib), "lowprec")}
            if self.inplace or getattr(self, "editable_mode", False):
                folders.add(os.path.abspath("lowprec"))
            for folder in folders:
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, BUILD_INFO), "w") as f:
                    json.dump(info, f, indent=1)

    if cuda_home is not None:
        _log(f"building the CUDA extension with the toolkit in {cuda_home} (GPU kernels "
             "for sm_90a/sm_100a + CPU kernels)")
        ext, no_cublaslt = _cuda_extension(cpp_extension, torch, cuda_home)
    else:
        _log(f"building the CPU extension ({no_cuda})")
        ext = _cpu_extension(cpp_extension)
    return [ext], {"build_ext": OptionalBuildExtension}


if __name__ == "__main__":      # pip runs this file as a script; tests import its functions
    ext_modules, cmdclass = extension_modules()
    setup(
        packages=PACKAGES,
        # Triton kernels live in kernels/ at the top of the tree (project layout) and are
        # installed as the subpackage lowprec.kernels.
        package_dir={"lowprec.kernels": "kernels"},
        # The planner's default device cost table (lowprec/planner/cost.py reads it).
        package_data={"lowprec.planner": ["device_costs.json"],
                      "lowprec.kernels": ["winners.json"]},
        ext_modules=ext_modules,
        cmdclass=cmdclass,
    )
