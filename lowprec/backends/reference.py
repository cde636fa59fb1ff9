"""The pure-PyTorch reference as a backend: runs on any device, always available."""

import torch

from lowprec.checks import UINT64_SPAN
from lowprec.reference import (
    dequantize_nvfp4,
    fp8_gemm,
    nvfp4_gemm,
    quantize_fp8_row_col,
    quantize_fp8_rowwise as quantize_fp8,
    quantize_nvfp4,
    quantize_row_col as _quantize_row_col,
    quantize_weight_2d,
)

__all__ = ["availability", "dequantize_nvfp4", "fp8_gemm", "nvfp4_gemm", "quantize_fp8",
           "quantize_fp8_row_col", "quantize_nvfp4", "quantize_row_col",
           "quantize_weight_2d"]


def availability(device_type):
    return None


def quantize_row_col(x, *, seed=0, **kwargs):
    """``lowprec.reference.quantize_row_col``; a key given as a one-element tensor (device
    SR keys, ``lowprec.sr_keys``) is read here (a sync on a GPU: the reference is slow)."""
    if isinstance(seed, torch.Tensor):
        seed = int(seed.item()) % UINT64_SPAN
    return _quantize_row_col(x, seed=seed, **kwargs)
