"""The scale arguments of Blackwell's native block-scaled FP4 GEMM, in one launch.

torch's NVFP4 GEMM (``lowprec.blackwell``) takes, per operand, its block scales in
cuBLAS's blocked layout and its global decode scale as a one-element FP32 tensor
(NUMERICS 8). ``scaled_mm_scales`` writes all four for both operands of one GEMM in one
launch, where a swizzle copy per operand and a launch for the two decode scales took
three.

The blocked layout (``reference.swizzle_scales``): the ``[rows, cols]`` scales are
padded with zeros to 128 rows and 4 columns and cut into 128 x 4 tiles of 512 bytes,
stored row-block-major. Inside a tile, byte ``16 i + 4 q + c`` holds row ``32 q + i``
and column ``c``. Each program writes one tile, its padding included, so the output
needs no zero fill beforehand; program 0 also writes the two decode scales.
"""

import torch
import triton
import triton.language as tl

from lowprec.shapes import swizzled_scales

from . import nvfp4_math as nm
from .config import amax_argument, launch_options

TILE_BYTES = 128 * 4      # one tile of the blocked layout, one program's work


@triton.jit
def _swizzle_tile(
        # Pointers: one operand's scale bytes ([rows, cols], contiguous) and its swizzled
        # buffer (tiles of 512 bytes).
        scale_ptr, out_ptr,
        # Sizes: the operand's rows and scale columns; which of its tiles.
        rows, cols, tile):
    tiles_per_row_block = tl.cdiv(cols, 4)
    row_block = tile // tiles_per_row_block
    col_block = tile % tiles_per_row_block
    byte = tl.arange(0, 512)
    # byte = 16 i + 4 q + c holds row 32 q + i, column c of the tile.
    r = row_block * 128 + ((byte // 4) % 4) * 32 + byte // 16
    c = col_block * 4 + byte % 4
    inside = (r < rows) & (c < cols)
    values = tl.load(scale_ptr + r.to(tl.int64) * cols + c, mask=inside, other=0)
    tl.store(out_ptr + tile.to(tl.int64) * 512 + byte, values)


@triton.jit
def _scaled_mm_scales_kernel(
        # Pointers: the operands' scale bytes (uint8 views of [rows, cols] E4M3, contiguous)
        # and amaxes (fp32 [1]); the outputs: the two swizzled buffers (uint8) and the two
        # global decode scales (fp32 [2]).
        a_scale_ptr, b_scale_ptr, a_amax_ptr, b_amax_ptr, a_out_ptr, b_out_ptr, global_ptr,
        # Sizes: rows of A and of B, scale columns of both (K / 16), how many tiles A has
        # (programs [0, a_tiles) write A's tiles, the rest B's).
        a_rows, b_rows, cols, a_tiles):
    pid = tl.program_id(0)
    if pid < a_tiles:
        _swizzle_tile(a_scale_ptr, a_out_ptr, a_rows, cols, pid)
    else:
        _swizzle_tile(b_scale_ptr, b_out_ptr, b_rows, cols, pid - a_tiles)
    if pid == 0:
        tl.store(global_ptr, nm.global_decode_scale(tl.load(a_amax_ptr)))
        tl.store(global_ptr + 1, nm.global_decode_scale(tl.load(b_amax_ptr)))


def swizzled_size(rows, cols):
    """Bytes of the blocked layout of ``[rows, cols]`` scales (padded to 128 x 4)."""
    padded_rows, padded_cols = swizzled_scales(rows, cols)
    return padded_rows * padded_cols


def scaled_mm_scales(a_scale, a_amax, b_scale, b_amax):
    """``(scale_a, scale_b, global_scales)`` for ``A [M, K] @ B [N, K]^T`` in NVFP4:
    each operand's E4M3 block scales ``[rows, K/16]`` in the blocked layout (1-D,
    float8_e4m3fn, ``swizzled_size`` elements), and ``[S_dec(A), S_dec(B)]``
    (``reference.global_decode_scale`` of each amax, FP32 ``[2]``). One launch; the
    arguments are the quantizers' outputs, checked where the GEMM's operands were."""
    (a_rows, cols), b_rows = a_scale.shape, b_scale.shape[0]
    a_tiles = swizzled_size(a_rows, cols) // TILE_BYTES
    b_tiles = swizzled_size(b_rows, cols) // TILE_BYTES
    device = a_scale.device
    a_out = torch.empty(a_tiles * TILE_BYTES, dtype=torch.uint8, device=device)
    b_out = torch.empty(b_tiles * TILE_BYTES, dtype=torch.uint8, device=device)
    global_scales = torch.empty(2, dtype=torch.float32, device=device)
    _scaled_mm_scales_kernel[(a_tiles + b_tiles,)](
        a_scale_ptr=a_scale.contiguous().view(torch.uint8),
        b_scale_ptr=b_scale.contiguous().view(torch.uint8),
        a_amax_ptr=amax_argument(a_amax), b_amax_ptr=amax_argument(b_amax),
        a_out_ptr=a_out, b_out_ptr=b_out, global_ptr=global_scales,
        a_rows=a_rows, b_rows=b_rows, cols=cols, a_tiles=a_tiles, **launch_options())
    return (a_out.view(torch.float8_e4m3fn), b_out.view(torch.float8_e4m3fn), global_scales)
