"""Global amaxes for NVFP4: max|x| and max|RHT(x^T)| from one read of x (NUMERICS 2, 6).

The 1x16 quantizer needs each copy's global amax before it encodes any element, so this
kernel runs first (unless the caller already has the amaxes). It reads a ``[M, K]``
tensor once, in tiles of ``16 * CHUNKS`` rows by ``BLOCK_K`` columns:

* the rowwise amax is ``max |x|``;
* the columnwise amax (only when the columnwise copy gets the RHT; without it the two
  amaxes are equal) is ``max |bf16(RHT(x^T))|``: the 16-point transform runs along M,
  i.e. across each group of 16 rows of the tile, exactly as the quantizer will apply it.
  Rows past M are the zero padding of NUMERICS 10 (they change no amax).

Reductions run on the int32 bits of ``|x|`` so that NaN propagates (see nvfp4_math), and
each program folds its partial result into a zero-initialised int32 pair with one
``atomic_max`` per amax (relaxed: the consumer is the next launch on the stream, which
stream order already makes see it). Read back as fp32, the pair is the amax itself, or an
Inf/NaN pattern that the quantizer turns into the canonical NaN.
"""

import torch
import triton
import triton.language as tl

from . import nvfp4_math as nm
from .config import input_view, launch_options, tile_config


@triton.jit
def _amax_kernel(
        # Pointers: the input x [M, K], the 16 RHT signs (fp32, read when COL_RHT) and the
        # two results as int32 bits [2] (atomic max of non-negative floats' bits).
        x_ptr, signs_ptr, out_bits_ptr,
        # Sizes.
        M, K,
        # Strides of x, in elements.
        stride_m, stride_k,
        # Meta-parameters: x's dtype (nvfp4_math.load_f32); the columnwise amax of RHT(x^T)
        # too or not; the tile (16 * CHUNKS rows by BLOCK_K columns).
        X_KIND: tl.constexpr, COL_RHT: tl.constexpr,
        CHUNKS: tl.constexpr, BLOCK_K: tl.constexpr):
    ROWS: tl.constexpr = 16 * CHUNKS
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows < M)[:, None] & (cols < K)[None, :]
    x = nm.load_f32(x_ptr + nm.offsets_2d(rows, cols, stride_m, stride_k), mask, X_KIND)

    row_bits = tl.max(tl.max(nm.abs_bits(x), axis=1), axis=0)
    tl.atomic_max(out_bits_ptr, row_bits, sem="relaxed")
    if COL_RHT:
        # bf16 rounding is monotonic and symmetric, so max|bf16(y)| = bf16(max|y|): one
        # rounding per program instead of one per element.
        y = nm.rht_rows(x, signs_ptr, ROWS, BLOCK_K)
        col_bits = tl.max(tl.max(nm.abs_bits(y), axis=1), axis=0)
        col_bits = nm.abs_bits(nm.round_to_bf16(col_bits.to(tl.float32, bitcast=True)))
        tl.atomic_max(out_bits_ptr + 1, col_bits, sem="relaxed")
    else:
        tl.atomic_max(out_bits_ptr + 1, row_bits, sem="relaxed")   # no RHT: same values


@triton.jit
def _amax_persistent_kernel(
        # As _amax_kernel, plus the tile grid: tiles_k tiles along K, num_tiles in all.
        x_ptr, signs_ptr, out_bits_ptr, M, K, stride_m, stride_k, tiles_k, num_tiles,
        X_KIND: tl.constexpr, COL_RHT: tl.constexpr,
        CHUNKS: tl.constexpr, BLOCK_K: tl.constexpr):
    """The persistent variant (``variants``: amax "persistent"): a fixed grid of programs,
    each walking tiles ``program_id, program_id + num_programs, ...`` and keeping an
    element-wise running max of the bits in registers; one reduction and one atomic pair
    per program instead of per tile (the per-tile kernel issues 2 same-address atomics
    for every 4096 elements). Same bits: max is associative and commutative on the int32
    bits, and bf16 rounding is monotonic on them (NaN patterns included), so rounding the
    program's max once equals the max of per-tile roundings."""
    ROWS: tl.constexpr = 16 * CHUNKS
    row_acc = tl.zeros([ROWS, BLOCK_K], dtype=tl.int32)
    col_acc = tl.zeros([ROWS, BLOCK_K], dtype=tl.int32)
    for tile in range(tl.program_id(0), num_tiles, tl.num_programs(0)):
        rows = (tile // tiles_k) * ROWS + tl.arange(0, ROWS)
        cols = (tile % tiles_k) * BLOCK_K + tl.arange(0, BLOCK_K)
        mask = (rows < M)[:, None] & (cols < K)[None, :]
        x = nm.load_f32(x_ptr + nm.offsets_2d(rows, cols, stride_m, stride_k), mask, X_KIND)
        row_acc = tl.maximum(row_acc, nm.abs_bits(x))
        if COL_RHT:
            col_acc = tl.maximum(col_acc, nm.abs_bits(nm.rht_rows(x, signs_ptr, ROWS, BLOCK_K)))
    row_bits = tl.max(tl.max(row_acc, axis=1), axis=0)
    tl.atomic_max(out_bits_ptr, row_bits, sem="relaxed")
    if COL_RHT:
        col_bits = tl.max(tl.max(col_acc, axis=1), axis=0)
        col_bits = nm.abs_bits(nm.round_to_bf16(col_bits.to(tl.float32, bitcast=True)))
        tl.atomic_max(out_bits_ptr + 1, col_bits, sem="relaxed")
    else:
        tl.atomic_max(out_bits_ptr + 1, row_bits, sem="relaxed")


def amax_row_col(x, rht_signs=None, tile=None):
    """(max|x|, max|RHT(x^T)|) of a 2-D ``x`` as an fp32 tensor ``[2]`` (raw: an Inf/NaN
    entry is not yet canonical). Without ``rht_signs`` both entries are max|x|.

    ``rht_signs`` is the fp32 device tensor of s_j / 4 (see ``config.quarter_signs``).
    ``tile``: None for today's launch (``config.tile_config``), or a
    ``launches.Launch`` (a named variant: its tile, warps, stages and, when
    ``programs_per_sm`` is set, the persistent kernel).
    """
    m, k = x.shape
    out_bits = torch.zeros(2, dtype=torch.int32, device=x.device)
    if x.numel() > 0:
        view, kind = input_view(x)
        signs_ptr = rht_signs if rht_signs is not None else out_bits
        if tile is None:
            chunks, block_k, warps = tile_config(m, k)
            grid = (triton.cdiv(m, 16 * chunks), triton.cdiv(k, block_k))
            _amax_kernel[grid](x_ptr=view, signs_ptr=signs_ptr,
                               out_bits_ptr=out_bits, M=m, K=k,
                               stride_m=view.stride(0), stride_k=view.stride(1),
                               X_KIND=kind, COL_RHT=rht_signs is not None,
                               CHUNKS=chunks, BLOCK_K=block_k, num_warps=warps,
                               **launch_options())
        elif tile.programs_per_sm:
            tiles_m, tiles_k = triton.cdiv(m, 16 * tile.chunks), triton.cdiv(k, tile.block_k)
            grid = (min(tiles_m * tiles_k, tile.programs(x.device)),)
            _amax_persistent_kernel[grid](
                x_ptr=view, signs_ptr=signs_ptr, out_bits_ptr=out_bits, M=m, K=k,
                stride_m=view.stride(0), stride_k=view.stride(1), tiles_k=tiles_k,
                num_tiles=tiles_m * tiles_k, X_KIND=kind, COL_RHT=rht_signs is not None,
                CHUNKS=tile.chunks, BLOCK_K=tile.block_k, **tile.options())
        else:
            grid = (triton.cdiv(m, 16 * tile.chunks), triton.cdiv(k, tile.block_k))
            _amax_kernel[grid](x_ptr=view, signs_ptr=signs_ptr,
                               out_bits_ptr=out_bits, M=m, K=k,
                               stride_m=view.stride(0), stride_k=view.stride(1),
                               X_KIND=kind, COL_RHT=rht_signs is not None,
                               CHUNKS=tile.chunks, BLOCK_K=tile.block_k, **tile.options())
    return out_bits.view(torch.float32)
