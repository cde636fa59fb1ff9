"""Triton kernels for lowprec, installed as ``lowprec.kernels`` (the ``triton`` backend).

One op per file:

* ``nvfp4_math``     element math of NUMERICS 2-6 in integer / FP32 arithmetic
* ``amax``           max|x| and max|RHT(x^T)| in one read
* ``quantize_row_col`` fused rowwise + RHT-columnwise 1x16 quantization (RNE / SR)
* ``quantize_2d``    16x16 weight quantization, rowwise and transposed copies
* ``dequantize``     NVFP4 -> fp32 / bf16 / fp16
* ``nvfp4_gemm``     NVFP4 GEMM for Hopper (candidates and dispatch)
* ``fp8``            per-row E4M3 quantization and the FP8 GEMM
* ``backend``        torch.library custom ops and the backend entry points
* ``aot``            compile for sm_90 without a GPU: spills, SASS per element

The entry points for the training layer are re-exported here; importing this package
does not import Triton.
"""

_EXPORTS = ("quantize_row_col", "quantize_weight_2d")


def __getattr__(name):
    if name in _EXPORTS:
        from . import backend
        return getattr(backend, name)
    raise AttributeError(f"module 'lowprec.kernels' has no attribute {name!r}")


__all__ = list(_EXPORTS)
