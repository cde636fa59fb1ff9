"""NVFP4 dequantization: ``x_hat = e2m1(q) * f32(s_b) * S_dec`` (NUMERICS 2, 8).

Used by tests, debugging, and GEMM candidate (b), which dequantizes both operands to
bf16 *without* the global scale (``e2m1 * s_b`` has at most 6 significant bits, so it is
exact in bf16; the FP32 ``S_dec`` factors are applied once to the GEMM accumulator).

A program converts a tile of ``BLOCK_R`` rows by ``BLOCK_K`` elements: it reads the
packed bytes, splits the nibbles, decodes codes and E4M3 scales with integer arithmetic
(bit-exact in the interpreter too), multiplies in FP32 and rounds once to the output
dtype.
"""

import torch
import triton
import triton.language as tl

from . import nvfp4_math as nm
from .config import amax_argument, interpreting, launch_options, output_view


@triton.jit
def e2m1_value(code):
    """FP32 value of E2M1 codes 0..15 (code 8 is -0.0)."""
    mag = code & 7
    m = mag.to(tl.float32)
    value = tl.where(mag < 4, m * 0.5, tl.where(mag < 7, m - 2.0, 6.0))
    return (value.to(tl.int32, bitcast=True) | ((code & 8) << 28)).to(tl.float32, bitcast=True)


@triton.jit
def unpack_codes(packed, ROWS: tl.constexpr, HALF: tl.constexpr):
    """[ROWS, HALF] bytes -> [ROWS, 2*HALF] int32 codes (low nibble = even element)."""
    b = packed.to(tl.int32)
    return tl.reshape(tl.join(b & 0xF, b >> 4), [ROWS, 2 * HALF])


@triton.jit
def block_value_bits(codes, scale_bytes):
    """bf16 bits (int32 holding the 16 bits) of ``e2m1(code) * f32(s_b)``, per-element
    codes and per-block E4M3 scale bytes broadcast together: the values mode of the
    quantizers, the same bits as ``_dequantize_kernel`` without the global scale, stored
    as bf16.

    The E2M1 value is built from its bits (as ``e2m1_value``, fewer instructions): from
    magnitude 2 up, code m is the FP32 ``0x3F000000 + (m << 22)`` (1, 1.5, 2, 3, 4, 6);
    1 is 0.5 and 0 is 0; bit 3 is the sign. The product is exact in FP32 and in bf16
    (at most 6 significant bits, exponent within bf16's range), so its bf16 bits are its
    top half. The value is NaN exactly where the scale is, and then the canonical NaN
    (a GPU's multiply would give 0x7FFFFFFF).
    """
    mag = codes & 7
    bits = tl.where(mag >= 2, (mag << 22) + 0x3F000000, tl.where(mag == 1, 0x3F000000, 0))
    value = (bits | ((codes & 8) << 28)).to(tl.float32, bitcast=True)
    scale = nm.e4m3_byte_to_f32(scale_bytes)
    x = tl.where(scale != scale, nm.nan_f32(), value * scale)
    return x.to(tl.int32, bitcast=True) >> 16


@triton.jit
def _dequantize_kernel(
        # Pointers: codes [R, K/2] and scales [R, K/16] (uint8), the amax (fp32 [1], read
        # when APPLY_GLOBAL) and the output [R, K] (contiguous).
        data_ptr, scale_ptr, amax_ptr, out_ptr,
        # Sizes (every operand is contiguous: no strides).
        R, K,
        # Meta-parameters: apply the global scale or not; the output dtype
        # (nvfp4_math.store_kind); the tile (BLOCK_R rows by BLOCK_K columns).
        APPLY_GLOBAL: tl.constexpr, OUT_KIND: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    half = tl.program_id(1) * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)
    blk = tl.program_id(1) * (BLOCK_K // 16) + tl.arange(0, BLOCK_K // 16)
    row_ok = rows[:, None] < R
    r64 = rows[:, None].to(tl.int64)

    packed = tl.load(data_ptr + r64 * (K // 2) + half[None, :],
                     mask=row_ok & (half < K // 2)[None, :], other=0)
    scale_bytes = tl.load(scale_ptr + r64 * (K // 16) + blk[None, :],
                          mask=row_ok & (blk < K // 16)[None, :], other=0)
    values = tl.reshape(e2m1_value(unpack_codes(packed, BLOCK_R, BLOCK_K // 2)),
                        [BLOCK_R, BLOCK_K // 16, 16])
    scales = nm.e4m3_byte_to_f32(scale_bytes.to(tl.int32))
    x = tl.reshape(values * scales[:, :, None], [BLOCK_R, BLOCK_K])     # exact
    if APPLY_GLOBAL:
        # reference.global_decode_scale: 1 / S_enc of the stored amax, as is.
        x = x * tl.div_rn(1.0, nm.global_encode_scale(tl.load(amax_ptr)))
    x = tl.where(x != x, nm.nan_f32(), x)        # the canonical NaN (reference.canonicalize_nan)
    nm.store_cast(out_ptr + r64 * K + cols[None, :], x, row_ok & (cols < K)[None, :], OUT_KIND)


def dequantize(data, scale, amax=None, dtype=torch.float32):
    """``[R, K/2]`` codes + ``[R, K/16]`` scales (+ global amax) -> ``[R, K]`` of ``dtype``.

    With ``amax=None`` the global scale is left out (``e2m1 * s_b`` only, exact in bf16).
    """
    r, k = data.shape[0], data.shape[1] * 2
    out = torch.empty(r, k, dtype=dtype, device=data.device)
    if out.numel() == 0:
        return out
    view, kind = output_view(out)
    if interpreting():
        block_r, block_k = min(64, triton.next_power_of_2(r)), min(512, triton.next_power_of_2(k))
    else:
        block_r, block_k = 16, 256
    grid = (triton.cdiv(r, block_r), triton.cdiv(k, block_k))
    amax_arg = amax_argument(amax, data.device) if amax is not None else view
    _dequantize_kernel[grid](data_ptr=data, scale_ptr=scale.view(torch.uint8),
                             amax_ptr=amax_arg, out_ptr=view, R=r, K=k,
                             APPLY_GLOBAL=amax is not None, OUT_KIND=kind,
                             BLOCK_R=block_r, BLOCK_K=block_k, num_warps=4,
                             **launch_options())
    return out
