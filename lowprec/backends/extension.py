"""The compiled extension's ops (csrc/bindings.cpp, ``lowprec_C::*``) in the backend
interface: the one adapter of the ``cpu`` and ``cuda`` backends, which run the same ops on
tensors of their device (csrc/quantize_cpu.cpp, csrc/quantize.cu).

Each function here has the signature of ``lowprec.reference``'s op (inputs validated by
``lowprec.ops``, or by the training layer where it is built) and returns the same named
results (``lowprec.copies``). It translates the arguments into the op schema: an RHT sign
vector becomes a 16-bit mask, uint64 seeds and offsets travel as int64, a copy not asked
for comes back as a placeholder and leaves as None. Importing this module registers the
ops' fake (meta) kernels, which ``torch.compile`` traces with; ``REASON`` is None when the
extension loaded (``lowprec._C``) and matches this code, else why not.
"""

import functools
import math

import torch

from lowprec import _C, shapes
from lowprec.backends.tensors import amax_operand, empty_outputs, row_col, seed_operands
from lowprec.checks import as_int64, weight_values
from lowprec.copies import FP8Copy, NVFP4Copy

# Kernel variants of the CUDA ops: the ``variant`` argument of the op schemas (and of the
# functions below), name -> index. Every variant gives the same bits as "baseline" (0,
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


def check_variant(op, variant):
    """Raises ValueError unless ``variant`` indexes a kernel variant of ``op``
    (``CUDA_VARIANTS``), as the op itself does."""
    count = len(CUDA_VARIANTS[op])
    if not 0 <= variant < count:
        raise ValueError(f"{op}: variant must be in [0, {count}); got {variant}")


def _register_fakes():
    """Shapes and dtypes of every op's outputs (``lowprec.shapes``), for FakeTensor
    tracing (torch.compile)."""

    @torch.library.register_fake("lowprec_C::quantize_nvfp4")
    def _(x, block_rows, rht_mask, stochastic, seed, offset, amax, variant=0):
        check_variant("quantize_nvfp4", variant)
        return empty_outputs(x, shapes.nvfp4(x.shape[:-1], x.shape[-1]))

    @torch.library.register_fake("lowprec_C::quantize_row_col")
    def _(x, rht_mask, rowwise, columnwise, row_stochastic, col_stochastic, seed, row_offset,
          col_offset, row_amax, col_amax, variant=0, row_values=False, col_values=False,
          seed_tensor=None):
        check_variant("quantize_row_col", variant)
        return empty_outputs(x, shapes.row_col(*x.shape, rowwise, columnwise, row_values,
                                               col_values))

    @torch.library.register_fake("lowprec_C::quantize_weight_2d")
    def _(w, columnwise, stochastic, seed, offset, amax, variant=0, values=False):
        check_variant("quantize_weight_2d", variant)
        weight_values(columnwise, values)
        return empty_outputs(w, shapes.weight_2d(*w.shape, columnwise, values))

    @torch.library.register_fake("lowprec_C::block_dequantize_nvfp4")
    def _(data, scale):
        return data.new_empty((*data.shape[:-1], data.shape[-1] * 2), dtype=torch.float32)

    @torch.library.register_fake("lowprec_C::nvfp4_gemm")
    def _(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias, out_dtype):
        return a_data.new_empty((a_data.shape[0], b_data.shape[0]), dtype=out_dtype)

    @torch.library.register_fake("lowprec_C::nvfp4_gemm_values")
    def _(a, a_amax, b, b_amax, out_dtype):
        return a.new_empty((a.shape[0], b.shape[0]), dtype=out_dtype)

    @torch.library.register_fake("lowprec_C::quantize_fp8_rowwise")
    def _(x):
        return empty_outputs(x, shapes.fp8(x.shape[:-1], x.shape[-1]))


def _reason():
    if _C.REASON is not None:
        return _C.REASON
    try:
        _register_fakes()
    except Exception as err:  # e.g. an extension built from older sources lacks an op
        return (f"the compiled extension {_C.EXTENSION} does not match lowprec's Python code "
                f"({type(err).__name__}: {err}); rebuild it with "
                "`pip install --no-build-isolation -e .`")
    return None


REASON = _reason()


def sign_mask(rht_signs):
    """-1 for no RHT, else the 16-bit mask with bit j set where sign j is -1."""
    if rht_signs is None:
        return -1
    return _mask_of(tuple(rht_signs))


@functools.lru_cache(maxsize=64)
def _mask_of(signs):
    # Cached: a training step passes the same few vectors on every call.
    return sum(1 << j for j, s in enumerate(signs) if s == -1)


def quantize_nvfp4(x, *, block="1x16", rht_signs=None, stochastic=False, seed=0, offset=0,
                   amax=None, variant=0):
    """``lowprec.reference.quantize_nvfp4``; ``variant``: the CUDA kernel variant
    (``CUDA_VARIANTS``; same bits)."""
    return NVFP4Copy(*torch.ops.lowprec_C.quantize_nvfp4(
        x.detach(), 16 if block == "16x16" else 1, sign_mask(rht_signs), bool(stochastic),
        as_int64(seed), as_int64(offset), amax, int(variant)))


def quantize_row_col(x, *, rht_signs=None, rowwise=True, columnwise=True,
                     row_stochastic=False, col_stochastic=False, seed=0, row_offset=0,
                     col_offset=0, row_amax=None, col_amax=None, variant=0, row_values=False,
                     col_values=False):
    """``lowprec.reference.quantize_row_col``: both copies from one read on CUDA, two loops
    on CPU. Returns ``RowCol`` of ``NVFP4Copy`` (None for a copy not asked for).
    ``variant``: the CUDA kernel variant (``CUDA_VARIANTS``; same bits).

    ``row_values`` / ``col_values`` (values mode, every variant): that copy is ``(values
    bfloat16, empty float8_e4m3fn [0], amax)``, the values ``e2m1(q) * s_b`` of the packed
    copy (no global scale; exact; every NaN the canonical one), rowwise ``[M, K]``,
    columnwise ``[K, M_pad]``: ``reference.as_values`` of the packed copy.

    ``seed``: an int, or a one-element int64 tensor on x's device that the kernel reads
    when it runs (``lowprec.sr_keys`` device keys; on CPU the op reads it at the call).
    """
    # [..., K] -> [M, K]: the rowwise copy has the contract's shape [M, K] on every backend.
    x2d = x.detach().reshape(math.prod(x.shape[:-1]), x.shape[-1])
    seed, seed_tensor = seed_operands(seed)
    out = torch.ops.lowprec_C.quantize_row_col(
        x2d, sign_mask(rht_signs), bool(rowwise), bool(columnwise),
        bool(row_stochastic), bool(col_stochastic), seed, as_int64(row_offset),
        as_int64(col_offset), amax_operand(row_amax, x.device),
        amax_operand(col_amax, x.device), int(variant), bool(row_values), bool(col_values),
        seed_tensor)
    return row_col(out, rowwise, columnwise)


def quantize_weight_2d(w, *, columnwise=True, stochastic=False, seed=0, offset=0, amax=None,
                       variant=0, values=False):
    """``lowprec.reference.quantize_weight_2d``: W and W^T, 16x16 tiles, from one read.
    ``variant``: the CUDA kernel variant (``CUDA_VARIANTS``; same bits).

    ``values=True`` (values mode; needs ``columnwise=False``, ValueError otherwise): the
    rowwise copy is ``(values bfloat16 [N, K], empty float8_e4m3fn [0], amax)``,
    ``reference.as_values`` of the packed W; W^T's values are its transpose."""
    weight_values(columnwise, values)
    out = torch.ops.lowprec_C.quantize_weight_2d(
        w.detach(), bool(columnwise), bool(stochastic), as_int64(seed), as_int64(offset),
        amax_operand(amax, w.device), int(variant), bool(values))
    return row_col(out, True, columnwise)


def block_dequantize_nvfp4(data, scale):
    """``e2m1 * s_b`` in FP32 (exact), without the global scale."""
    return torch.ops.lowprec_C.block_dequantize_nvfp4(data, scale)


def quantize_fp8(x):
    """``lowprec.reference.quantize_fp8_rowwise``."""
    return FP8Copy(*torch.ops.lowprec_C.quantize_fp8_rowwise(x.detach()))


def nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
               out_dtype=torch.bfloat16):
    """``lowprec.reference.nvfp4_gemm``, in one op (CPU tensors)."""
    return torch.ops.lowprec_C.nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax,
                                          bias, out_dtype)


def nvfp4_gemm_values(a_values, a_amax, b_values, b_amax, out_dtype=torch.bfloat16):
    """``alpha * a_values @ b_values^T`` (NUMERICS 8) of operands already block-dequantized
    to bf16 (``lowprec.kernels.nvfp4_gemm.gemm_values``' contract, without a bias), in one
    op: on CUDA one cuBLASLt call with alpha read from device memory
    (csrc/nvfp4_gemm_values_cuda.cpp), on the CPU in FP32. ``out_dtype``: bf16 or FP32.
    ``b_values`` may be a transposed view."""
    return torch.ops.lowprec_C.nvfp4_gemm_values(a_values, a_amax, b_values, b_amax, out_dtype)
