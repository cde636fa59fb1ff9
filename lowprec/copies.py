"""The named results of the backend interface: the tensors of one quantized copy, and the
rowwise / columnwise pair of copies one quantize call produces.

Every backend (the reference, the Triton and the C++ adapters) returns these, so a
caller reads ``row.scale`` or ``copies.columnwise`` the same way whatever ran; they are
tuples, so ``data, scale, amax = row`` and ``row, col = copies`` unpack as before.
Torch-free: ``lowprec.formats`` wraps them into the public ``NVFP4Tensor`` /
``FP8Tensor``, which know their logical shape and dequantize.
"""

from typing import Any, NamedTuple, Optional


class NVFP4Copy(NamedTuple):
    """One NVFP4 copy: ``data`` uint8 ``[..., K/2]`` (two E2M1 codes a byte), ``scale``
    float8_e4m3fn ``[..., K/16]``, ``amax`` the FP32 0-d global amax. In values mode
    ``data`` is the bf16 block-dequantized values ``[..., K]`` and ``scale`` is empty."""
    data: Any
    scale: Any
    amax: Any


class RowCol(NamedTuple):
    """The copies of one quantize call: ``rowwise`` (along K: fprop / dgrad's operand)
    and ``columnwise`` (the transposed copy: wgrad's, or dgrad's W^T), each a copy or
    None where it was not asked for."""
    rowwise: Optional[Any]
    columnwise: Optional[Any]


class FP8Copy(NamedTuple):
    """One FP8 copy: ``data`` float8_e4m3fn ``[..., K]``, ``scale`` FP32 ``[..., 1]``."""
    data: Any
    scale: Any


class FP8RowCol(NamedTuple):
    """Both FP8 layouts of ``x [M, K]``, flat: x per row (``[M, K]``, ``[M, 1]``) and x^T
    per row (``[K, M]``, ``[K, 1]``)."""
    rowwise_data: Any
    rowwise_scale: Any
    columnwise_data: Any
    columnwise_scale: Any
