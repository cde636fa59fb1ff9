"""The C++ kernels of csrc/ built for the CPU (csrc/quantize_cpu.cpp) as a backend.

Quantization runs in C++ over the same element math as the CUDA kernels and equals the
reference bit for bit. The NVFP4 GEMM is one C++ op that dequantizes (exact), multiplies
with ``at::matmul`` in FP32 and applies alpha once: the reference's arithmetic, so also
its bits on the same machine. The ops come through the extension's one adapter,
``lowprec.backends.extension``.
"""

import torch

from lowprec import reference
from lowprec.backends import extension
from lowprec.copies import FP8RowCol

# This backend's ops: the extension's, on CPU tensors; the FP8 GEMM is the reference's
# (torch.matmul either way).
quantize_nvfp4 = extension.quantize_nvfp4
quantize_row_col = extension.quantize_row_col
quantize_weight_2d = extension.quantize_weight_2d
quantize_fp8 = extension.quantize_fp8
nvfp4_gemm = extension.nvfp4_gemm
fp8_gemm = reference.fp8_gemm

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
    if extension.REASON is not None:
        return extension.REASON
    if device_type != "cpu":
        return f"the cpu backend runs on CPU tensors only; got device type {device_type!r}"
    return None


def dequantize_nvfp4(data, scale, amax, dtype=torch.float32):
    return reference.apply_global_decode_scale(extension.block_dequantize_nvfp4(data, scale),
                                               amax, dtype)


def quantize_fp8_row_col(x):
    return FP8RowCol(*quantize_fp8(x), *quantize_fp8(x.t().contiguous()))
