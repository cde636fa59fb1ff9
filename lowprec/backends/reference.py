"""The pure-PyTorch reference as a backend: runs on any device, always available."""

from lowprec.reference import (
    dequantize_nvfp4,
    fp8_gemm,
    nvfp4_gemm,
    quantize_fp8_row_col,
    quantize_fp8_rowwise as quantize_fp8,
    quantize_nvfp4,
    quantize_row_col,
    quantize_weight_2d,
)

__all__ = ["availability", "dequantize_nvfp4", "fp8_gemm", "nvfp4_gemm", "quantize_fp8",
           "quantize_fp8_row_col", "quantize_nvfp4", "quantize_row_col",
           "quantize_weight_2d"]


def availability(device_type):
    return None
