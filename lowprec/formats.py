"""Containers for quantized tensors.

``NVFP4Tensor`` and ``FP8Tensor`` are plain holders of the tensors a GEMM reads (no
``torch.Tensor`` subclassing): the data, the block scales in plain row-major layout and
the global FP32 amax, plus the facts needed to interpret them (logical shape, block,
RHT signs). The backends return the bare named copies of ``lowprec.copies``; the output
shapes every backend's fake kernel promises are ``lowprec.shapes``'.
"""

import torch

from lowprec import reference


class NVFP4Tensor:
    """An NVFP4-quantized tensor (NUMERICS 1-6).

    Attributes:
        data: uint8 ``[..., K/2]``, two E2M1 codes per byte, even element in the low nibble.
        scale: float8_e4m3fn ``[..., K/16]``, one scale per 16 elements along K (for
            ``block="16x16"`` the tile scale repeated for each of its 16 rows).
        amax: FP32 0-d tensor, the global amax (NaN if the input held NaN/Inf).
        shape: the logical shape ``[..., K]``.
        block: ``"1x16"`` or ``"16x16"``.
        rht_signs: the RHT sign vector applied before quantization, or None. The codes
            then represent ``rht(x)``; only operands with the same signs multiply to
            the untransformed product.
    """

    __slots__ = ("data", "scale", "amax", "shape", "block", "rht_signs")

    def __init__(self, data, scale, amax, shape, block="1x16", rht_signs=None):
        self.data = data
        self.scale = scale
        self.amax = amax
        self.shape = torch.Size(shape)
        self.block = block
        self.rht_signs = None if rht_signs is None else tuple(map(int, rht_signs))

    @property
    def device(self):
        return self.data.device

    def block_dequantize(self):
        """``e2m1 * s_b`` in FP32 (exact), without the global scale: what a GEMM reads."""
        return reference.block_dequantize_nvfp4(self.data, self.scale)

    def dequantize(self, dtype=torch.float32):
        """``e2m1(q) * s_b * S_dec`` cast to ``dtype`` (of ``rht(x)`` when RHT was applied)."""
        return reference.dequantize_nvfp4(self.data, self.scale, self.amax, dtype)

    def codes(self):
        """The unpacked E2M1 codes, uint8 ``[..., K]``."""
        return reference.unpack_codes(self.data)

    def __repr__(self):
        rht = "" if self.rht_signs is None else ", rht"
        return (f"NVFP4Tensor(shape={tuple(self.shape)}, block={self.block}{rht}, "
                f"amax={self.amax.item():.6g}, device={self.device})")


class FP8Tensor:
    """An FP8 (E4M3) tensor with one FP32 scale per row (NUMERICS 9).

    Attributes:
        data: float8_e4m3fn ``[..., K]``.
        scale: FP32 ``[..., 1]``; ``x ~= data * scale``.
        shape: the logical shape ``[..., K]``.
    """

    __slots__ = ("data", "scale", "shape")

    def __init__(self, data, scale, shape):
        self.data = data
        self.scale = scale
        self.shape = torch.Size(shape)

    @property
    def device(self):
        return self.data.device

    def dequantize(self, dtype=torch.float32):
        return reference.dequantize_fp8(self.data, self.scale, dtype)

    def __repr__(self):
        return f"FP8Tensor(shape={tuple(self.shape)}, device={self.device})"
