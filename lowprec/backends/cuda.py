"""The CUDA C++ kernels of csrc/ (quantize.cu) as a backend.

Quantization runs in the CUDA kernels, packed or in values mode (a copy written as its
bf16 block-dequantized values, for the Hopper GEMM emulation: ``QUANTIZE_VALUES``),
through the extension's one adapter, ``lowprec.backends.extension``. ``nvfp4_gemm`` is
the native block-scaled FP4 GEMM of Blackwell (``lowprec.blackwell``, through torch's
``scaled_mm``); the shapes it cannot take run the Triton kernels' dequantize + mm
(``lowprec.kernels.nvfp4_gemm``, the kernel the Triton backend runs too). Everything
else (dequantization, FP8, the NVFP4 GEMM on Hopper) is not implemented here:
``backend="auto"`` takes it from the Triton backend, never from the reference.
"""

import torch

from lowprec import _C, blackwell
from lowprec.backends import extension
from lowprec.kernels import nvfp4_gemm as triton_gemm

MIN_CAPABILITY = _C.MIN_CAPABILITY
# The quantizers: the extension's, on CUDA tensors.
quantize_nvfp4 = extension.quantize_nvfp4
quantize_row_col = extension.quantize_row_col
quantize_weight_2d = extension.quantize_weight_2d
QUANTIZE_OPS = ("quantize_nvfp4", "quantize_row_col", "quantize_weight_2d")
# The quantizers take row_values / col_values (quantize_row_col) and values
# (quantize_weight_2d), in every kernel variant: see lowprec.backends.KernelTable.nvfp4_values.
QUANTIZE_VALUES = True
NATIVE_FP4_GEMM = "torch:scaled_mm(nvfp4)"
# What runs, per call, for the shapes the native GEMM cannot take (the Triton kernels').
SHAPE_FALLBACK = "dequant+torch.mm"


def availability(device_type):
    if device_type != "cuda":
        return f"the cuda backend runs on CUDA tensors only; got device type {device_type!r}"
    return extension.REASON or _C.cuda_reason()


def implementation(op, capability):
    """What this backend runs for ``op`` on a GPU of ``capability`` (see lowprec.backends)."""
    if capability is None or capability < MIN_CAPABILITY:
        return None
    if op in QUANTIZE_OPS:
        return f"cuda:{op}"
    if op == "nvfp4_gemm" and capability >= blackwell.MIN_CAPABILITY:
        return f"{NATIVE_FP4_GEMM}; K % 32 != 0: {SHAPE_FALLBACK}"
    return None


def nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
               out_dtype=torch.bfloat16):
    """The native FP4 GEMM; shapes it cannot take (K % 32 != 0) go to the Triton GEMM,
    which has the same contract (NUMERICS 8)."""
    if blackwell.reason_unsupported(a_data, b_data) is None:
        return blackwell.nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax,
                                    bias=bias, out_dtype=out_dtype)
    return triton_gemm.nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax,
                                  bias=bias, out_dtype=out_dtype)
