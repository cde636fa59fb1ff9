"""lowprec: NVFP4 / FP8 / BF16 low-precision training for PyTorch.

The numerics are specified in NUMERICS.md; ``lowprec.reference`` is their executable
form and every backend reproduces its bits.
"""

from lowprec.formats import FP8Tensor, NVFP4Tensor
from lowprec.ops import (
    available,
    dequantize_nvfp4,
    fp8_gemm,
    nvfp4_gemm,
    quantize_fp8,
    quantize_nvfp4,
)

__version__ = "0.1.0"

__all__ = [
    "FP8Tensor",
    "NVFP4Tensor",
    "available",
    "dequantize_nvfp4",
    "fp8_gemm",
    "nvfp4_gemm",
    "quantize_fp8",
    "quantize_nvfp4",
]
