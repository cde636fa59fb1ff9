"""The C++ kernels of csrc/ built for the CPU (csrc/quantize_cpu.cpp) as a backend.

Quantization runs in C++ over the same element math as the CUDA kernels and equals the
reference bit for bit. The NVFP4 GEMM is one C++ op that dequantizes (exact), multiplies
with ``at::matmul`` in FP32 and applies alpha once: the reference's arithmetic, so also
its bits on the same machine.
"""

import torch

from lowprec import _C, reference
from lowprec.reference import fp8_gemm  # noqa: F401  (the GEMM is torch.matmul either way)

quantize_row_col = _C.quantize_row_col
quantize_weight_2d = _C.quantize_weight_2d


IMPLEMENTATIONS = {"quantize_nvfp4": "cpu:quantize_nvfp4",
                   "quantize_row_col": "cpu:quantize_row_col",
                   "quantize_weight_2d": "cpu:quantize_weight_2d",
                   "dequantize_nvfp4": "cpu:dequantize",
                   "quantize_fp8": "cpu:quantize_fp8",
                   "quantize_fp8_row_col": "cpu:quantize_fp8(x)+quantize_fp8(x^T copy)",
                   "nvfp4_gemm": "cpu:dequantize+torch.matmul(fp32)",
                   "fp8_gemm": "reference:fp8_gemm"}


def implementation(op, capability):
    """What this backend runs for ``op`` (CPU tensors only; see lowprec.backends)."""
    return IMPLEMENTATIONS.get(op) if capability is None else None


def availability(device_type):
    if _C.REASON is not None:
        return _C.REASON
    if device_type != "cpu":
        return f"the cpu backend runs on CPU tensors only; got device type {device_type!r}"
    return None


def quantize_nvfp4(x, *, block="1x16", rht_signs=None, stochastic=False, seed=0, offset=0,
                   amax=None):
    return _C.quantize_nvfp4(x, block=block, rht_signs=rht_signs, stochastic=stochastic,
                             seed=seed, offset=offset, amax=amax)


def dequantize_nvfp4(data, scale, amax, dtype=torch.float32):
    return reference.apply_global_decode_scale(_C.block_dequantize_nvfp4(data, scale), amax,
                                               dtype)


def quantize_fp8(x):
    return _C.quantize_fp8(x)


def quantize_fp8_row_col(x):
    return (*_C.quantize_fp8(x), *_C.quantize_fp8(x.t().contiguous()))


nvfp4_gemm = _C.nvfp4_gemm
