"""The one place that loads the compiled extension ``lowprec._lowprec_C`` (csrc/).

Importing this module never raises for a missing or broken build: ``REASON`` is None
when the extension loaded, else a sentence saying why it did not, which the ``cpu`` and
``cuda`` backends hand (through ``lowprec.backends.extension.REASON``) to
``lowprec.available(return_reason=True)``. ``lowprec`` itself
never imports this module at top level; the backends import it when first asked.

``LOWPREC_NO_EXT=1`` in the environment disables compiled code at build time (setup.py)
and at run time (here), so one switch gives a pure-Python lowprec.

This module only loads the extension and says what the build holds (``build_info``,
``build_note``, ``cuda_reason``). Its ops (``torch.ops.lowprec_C.*``) reach the backend
interface through one adapter, ``lowprec.backends.extension``, which also registers their
fake kernels.
"""

import importlib
import json
import os
import warnings

import torch

EXTENSION = "lowprec._lowprec_C"
# What setup.py built and why not more, written beside the extension.
BUILD_INFO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build_info.json")
# The CUDA kernels are built for sm_90a, sm_100a and compute_90 PTX (csrc/nvcc_flags.txt).
MIN_CAPABILITY = (9, 0)


def _load():
    """None if the extension loaded (registering its ops), else why not."""
    if os.environ.get("LOWPREC_NO_EXT") == "1":
        return "LOWPREC_NO_EXT=1 is set: compiled code is disabled"
    try:
        importlib.import_module(EXTENSION)
    except ModuleNotFoundError as err:
        if err.name != EXTENSION:
            return f"the compiled extension {EXTENSION} failed to import: {err}"
        return (f"the compiled extension {EXTENSION} is not built (installed with "
                "LOWPREC_NO_EXT=1, or its optional build failed; rebuild with "
                "`pip install -v --no-build-isolation -e .` and read the 'lowprec setup' "
                "lines)")
    except Exception as err:  # undefined symbols, a torch ABI mismatch, ...
        return (f"the compiled extension {EXTENSION} failed to load "
                f"({type(err).__name__}: {err}); rebuild it against the installed "
                f"torch {torch.__version__}")
    return None


def build_info():
    """The build record of setup.py (a dict), or None when there is none."""
    try:
        with open(BUILD_INFO) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def build_note():
    """One line on what the installed build lacks and why, or None when nothing is
    missing (shown by ``lowprec info`` and the demo's first line)."""
    info = build_info()
    if info is None:
        return None
    if info.get("failed"):
        return f"the compiled extension failed to build: {info['failed']}"
    if info.get("no_cuda") and torch.version.cuda is not None:
        return f"the extension was built without its CUDA kernels: {info['no_cuda']}"
    return None


REASON = _load()
_NOTE = build_note()
if _NOTE is not None and (torch.cuda.is_available() or REASON is not None):
    # Kernels this machine would use are missing: say so once, not only when asked.
    warnings.warn(f"lowprec: {_NOTE} (`lowprec info` shows what runs instead)",
                  RuntimeWarning, stacklevel=2)


def _missing_cuda_kernel(op, what, *record_keys):
    """None if ``lowprec_C::<op>`` has a CUDA kernel, else that the extension was built
    without ``what``, with the first reason the build record gives under ``record_keys``."""
    if torch._C._dispatch_has_kernel_for_dispatch_key(f"lowprec_C::{op}", "CUDA"):
        return None
    info = build_info() or {}
    why = next((info[key] for key in record_keys if info.get(key)), "no record of why")
    return f"{EXTENSION} was built without {what} ({why})"


def cuda_reason():
    """None if the CUDA kernels can run here, else why not."""
    if REASON is not None:
        return REASON
    missing = _missing_cuda_kernel("quantize_nvfp4", "CUDA kernels", "no_cuda")
    if missing is not None:
        return missing
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < MIN_CAPABILITY:
        return (f"the CUDA kernels are built for sm_90a, sm_100a and compute_90 PTX; this "
                f"GPU is sm_{major}{minor}")
    return None


def cublaslt_reason():
    """None if the extension has the CUDA kernel of ``nvfp4_gemm_values`` (the cuBLASLt
    GEMM on bf16 values), else why not."""
    if REASON is not None:
        return REASON
    return _missing_cuda_kernel("nvfp4_gemm_values", "the cuBLASLt GEMM", "no_cublaslt",
                                "no_cuda")
