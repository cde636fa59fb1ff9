"""The CUDA C++ kernels of csrc/ (quantize.cu) as a backend.

Quantization runs in the CUDA kernels. ``nvfp4_gemm`` uses the native block-scaled FP4
GEMM on Blackwell (``lowprec.blackwell``, untested on hardware) and otherwise the exact
emulation of NUMERICS 8 (block dequantization in FP32, one FP32 matmul, alpha once).
FP8 ops are not implemented here: ``backend="auto"`` takes them from Triton or the
reference.
"""

import torch

from lowprec import _C, blackwell, reference


def availability(device_type):
    if device_type != "cuda":
        return f"the cuda backend runs on CUDA tensors only; got device type {device_type!r}"
    return _C.cuda_reason()


def quantize_nvfp4(x, *, block="1x16", rht_signs=None, stochastic=False, seed=0, offset=0,
                   amax=None):
    return _C.quantize_nvfp4(x, block=block, rht_signs=rht_signs, stochastic=stochastic,
                             seed=seed, offset=offset, amax=amax)


quantize_rowwise_and_columnwise = _C.quantize_rowwise_and_columnwise
quantize_weight_2d = _C.quantize_weight_2d
counters_used = _C.counters_used


def dequantize_nvfp4(data, scale, amax, dtype=torch.float32):
    return reference.dequantize_nvfp4(data, scale, amax, dtype)


def nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
               out_dtype=torch.bfloat16):
    if blackwell.reason_unsupported(a_data, b_data) is None:
        return blackwell.nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax,
                                    bias=bias, out_dtype=out_dtype)
    return reference.nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=bias,
                                out_dtype=out_dtype)
