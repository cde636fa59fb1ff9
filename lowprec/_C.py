"""The one place that loads the compiled extension ``lowprec._lowprec_C`` (csrc/).

Importing this module never raises for a missing or broken build: ``REASON`` is None
when the extension loaded, else a sentence saying why it did not, which the ``cpu`` and
``cuda`` backends hand to ``lowprec.available(return_reason=True)``. ``lowprec`` itself
never imports this module at top level; the backends import it when first asked.

``LOWPREC_NO_EXT=1`` in the environment disables compiled code at build time (setup.py)
and at run time (here), so one switch gives a pure-Python lowprec.

The functions below translate the Python API's arguments into the op schemas of
csrc/bindings.cpp (an RHT sign vector becomes a 16-bit mask, uint64 seeds and offsets
travel as int64) and register the fake (meta) kernels ``torch.compile`` traces with.
"""

import functools
import importlib
import json
import math
import os
import warnings

import torch

from lowprec.checks import as_int64
from lowprec.formats import empty_nvfp4, empty_row_col, empty_weight_2d

EXTENSION = "lowprec._lowprec_C"
# What setup.py built and why not more, written beside the extension.
BUILD_INFO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build_info.json")
# The CUDA kernels are built for sm_90a, sm_100a and compute_90 PTX (csrc/nvcc_flags.txt).
MIN_CAPABILITY = (9, 0)

# Kernel variants of the CUDA ops: the ``variant`` argument of the op schemas (and of the
# wrappers below), name -> index. Every variant gives the same bits as "baseline" (0,
# the default); they differ in schedule or instruction sequence (csrc/quantize.cu):
# "prefetch" keeps the next unit's (1x16) or tile's (fused) 16-byte loads in flight
# while the current one is quantized; "fastenc" encodes with the fast E2M1 encoders of
# csrc/nvfp4_math.h (same bits, fewer instructions); "prefetch_fastenc" does both. A
# sweep on the GPU times each and keeps the fastest bit-exact one. quantize_nvfp4's
# variants are those of its 1x16 kernel (block 16x16 runs the 16x16 baseline whatever the
# index); quantize_row_col's those of the fused kernel (a rowwise-only call runs the 1x16
# baseline); quantize_weight_2d's those of the 16x16 kernel. The counts match
# csrc/ops.h; the ops (and their fakes) reject other indices.
CUDA_VARIANTS = {
    "quantize_nvfp4": {"baseline": 0, "prefetch": 1, "prefetch_fastenc": 2, "fastenc": 3},
    "quantize_row_col": {"baseline": 0, "prefetch": 1, "prefetch_fastenc": 2, "fastenc": 3},
    "quantize_weight_2d": {"baseline": 0, "fastenc": 1},
}


def _load():
    """None if the extension loaded and registered its ops, else why not."""
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
    try:
        _register_fakes()
    except Exception as err:  # e.g. an extension built from older sources lacks an op
        return (f"the compiled extension {EXTENSION} does not match lowprec's Python code "
                f"({type(err).__name__}: {err}); rebuild it with "
                "`pip install --no-build-isolation -e .`")
    return None


# quantize_weight_2d(values=True) gives W's values only (W^T's are their transpose): the
# ValueError of every backend (kernels/backend.py; csrc/ops.h check_weight_values).
WEIGHT_VALUES_ERROR = ("quantize_weight_2d(values=True) gives W's values only: pass "
                       "columnwise=False and use .t() for W^T (exactly its values)")


def check_weight_values(columnwise, values):
    """Raises ValueError for ``values`` with ``columnwise`` (as the op itself does)."""
    if values and columnwise:
        raise ValueError(WEIGHT_VALUES_ERROR)


def check_variant(op, variant):
    """Raises ValueError unless ``variant`` indexes a kernel variant of ``op``
    (``CUDA_VARIANTS``), as the op itself does."""
    count = len(CUDA_VARIANTS[op])
    if not 0 <= variant < count:
        raise ValueError(f"{op}: variant must be in [0, {count}); got {variant}")


def _register_fakes():
    """Shapes and dtypes of every op's outputs, for FakeTensor tracing (torch.compile)."""

    @torch.library.register_fake("lowprec_C::quantize_nvfp4")
    def _(x, block_rows, rht_mask, stochastic, seed, offset, amax, variant=0):
        check_variant("quantize_nvfp4", variant)
        return empty_nvfp4(x, x.shape[:-1], x.shape[-1])

    @torch.library.register_fake("lowprec_C::quantize_row_col")
    def _(x, rht_mask, rowwise, columnwise, row_stochastic, col_stochastic, seed, row_offset,
          col_offset, row_amax, col_amax, variant=0, row_values=False, col_values=False):
        check_variant("quantize_row_col", variant)
        return empty_row_col(x, rowwise, columnwise, row_values=row_values,
                             col_values=col_values)

    @torch.library.register_fake("lowprec_C::quantize_weight_2d")
    def _(w, columnwise, stochastic, seed, offset, amax, variant=0, values=False):
        check_variant("quantize_weight_2d", variant)
        check_weight_values(columnwise, values)
        return empty_weight_2d(w, columnwise, values=values)

    @torch.library.register_fake("lowprec_C::block_dequantize_nvfp4")
    def _(data, scale):
        return data.new_empty((*data.shape[:-1], data.shape[-1] * 2), dtype=torch.float32)

    @torch.library.register_fake("lowprec_C::nvfp4_gemm")
    def _(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias, out_dtype):
        return a_data.new_empty((a_data.shape[0], b_data.shape[0]), dtype=out_dtype)

    @torch.library.register_fake("lowprec_C::quantize_fp8_rowwise")
    def _(x):
        return (x.new_empty(x.shape, dtype=torch.float8_e4m3fn),
                x.new_empty((*x.shape[:-1], 1), dtype=torch.float32))


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


def cuda_reason():
    """None if the CUDA kernels can run here, else why not."""
    if REASON is not None:
        return REASON
    if not torch._C._dispatch_has_kernel_for_dispatch_key("lowprec_C::quantize_nvfp4", "CUDA"):
        why = (build_info() or {}).get("no_cuda") or "no record of why"
        return f"{EXTENSION} was built without CUDA kernels ({why})"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < MIN_CAPABILITY:
        return (f"the CUDA kernels are built for sm_90a, sm_100a and compute_90 PTX; this "
                f"GPU is sm_{major}{minor}")
    return None


# ----------------------------------------------------------------------------------
# Argument translation (Python API -> op schema)
# ----------------------------------------------------------------------------------

def sign_mask(rht_signs):
    """-1 for no RHT, else the 16-bit mask with bit j set where sign j is -1."""
    if rht_signs is None:
        return -1
    return _mask_of(tuple(rht_signs))


@functools.lru_cache(maxsize=64)
def _mask_of(signs):
    # Cached: a training step passes the same few vectors on every call.
    return sum(1 << j for j, s in enumerate(signs) if s == -1)


def _amax_or_none(amax, device):
    if amax is None:
        return None
    return torch.as_tensor(amax, dtype=torch.float32, device=device).reshape(())


def quantize_nvfp4(x, *, block="1x16", rht_signs=None, stochastic=False, seed=0, offset=0,
                   amax=None, variant=0):
    """Same contract as ``lowprec.reference.quantize_nvfp4`` (inputs validated by ops.py);
    ``variant``: the CUDA kernel variant (``CUDA_VARIANTS``; same bits)."""
    data, scale, amax_out = torch.ops.lowprec_C.quantize_nvfp4(
        x.detach(), 16 if block == "16x16" else 1, sign_mask(rht_signs), bool(stochastic),
        as_int64(seed), as_int64(offset), amax, int(variant))
    return data, scale, amax_out


def quantize_row_col(x, *, rht_signs=None, rowwise=True, columnwise=True,
                     row_stochastic=False, col_stochastic=False, seed=0, row_offset=0,
                     col_offset=0, row_amax=None, col_amax=None, variant=0, row_values=False,
                     col_values=False):
    """Same contract as ``lowprec.reference.quantize_row_col`` (inputs validated by
    ``lowprec.ops.quantize_row_col``): both copies from one read on CUDA, two loops on CPU.
    Returns ``(row, col)``, each a ``(data, scale, amax)`` triple, or None if not asked for.
    ``variant``: the CUDA kernel variant (``CUDA_VARIANTS``; same bits).

    ``row_values`` / ``col_values`` (values mode, every variant): that copy is ``(values
    bfloat16, empty float8_e4m3fn [0], amax)``, the values ``e2m1(q) * s_b`` of the packed
    copy (no global scale; exact; every NaN the canonical one), rowwise ``[M, K]``,
    columnwise ``[K, M_pad]``: ``reference.as_values`` of the packed triple.
    """
    # [..., K] -> [M, K]: the rowwise copy has the contract's shape [M, K] on every backend.
    x2d = x.detach().reshape(math.prod(x.shape[:-1]), x.shape[-1])
    out = torch.ops.lowprec_C.quantize_row_col(
        x2d, sign_mask(rht_signs), bool(rowwise), bool(columnwise),
        bool(row_stochastic), bool(col_stochastic), as_int64(seed), as_int64(row_offset),
        as_int64(col_offset), _amax_or_none(row_amax, x.device),
        _amax_or_none(col_amax, x.device), int(variant), bool(row_values), bool(col_values))
    return (tuple(out[:3]) if rowwise else None), (tuple(out[3:]) if columnwise else None)


def quantize_weight_2d(w, *, columnwise=True, stochastic=False, seed=0, offset=0, amax=None,
                       variant=0, values=False):
    """Same contract as ``lowprec.reference.quantize_weight_2d`` (inputs validated by
    ``lowprec.ops.quantize_weight_2d``): W and W^T, 16x16 tiles, from one read.
    ``variant``: the CUDA kernel variant (``CUDA_VARIANTS``; same bits).

    ``values=True`` (values mode; needs ``columnwise=False``, ValueError otherwise): ``row``
    is ``(values bfloat16 [N, K], empty float8_e4m3fn [0], amax)``, ``reference.as_values``
    of the packed W; W^T's values are its transpose."""
    check_weight_values(columnwise, values)
    out = torch.ops.lowprec_C.quantize_weight_2d(
        w.detach(), bool(columnwise), bool(stochastic), as_int64(seed), as_int64(offset),
        _amax_or_none(amax, w.device), int(variant), bool(values))
    return tuple(out[:3]), (tuple(out[3:]) if columnwise else None)


def block_dequantize_nvfp4(data, scale):
    return torch.ops.lowprec_C.block_dequantize_nvfp4(data, scale)


def quantize_fp8(x):
    data, scale = torch.ops.lowprec_C.quantize_fp8_rowwise(x.detach())
    return data, scale


def nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
               out_dtype=torch.bfloat16):
    """Same contract as ``lowprec.reference.nvfp4_gemm``, in one op (CPU tensors)."""
    return torch.ops.lowprec_C.nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax,
                                          bias, out_dtype)
