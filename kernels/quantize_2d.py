"""NVFP4 16x16 (2-D) weight quantization, rowwise and columnwise from one read (NUMERICS 5).

One scale per 16x16 tile of W ``[N, K]``, stored in the 1x16 layout the GEMMs read:

* rowwise (fprop operand): data ``[N, K/2]``, scales ``[N, K/16]`` (a tile's scale repeated
  on each of its 16 rows);
* columnwise (dgrad operand, the quantized ``W^T``): data ``[K, N/2]``, scales
  ``[K, N/16]``. Its codes are the transpose of the rowwise codes, bit for bit, and its
  scales the transpose of the tile scales: forward and backward see one quantized W.

A program owns ``16 * CHUNKS`` rows by ``BLOCK_K`` columns. It computes each tile's amax,
scale and codes once, stores the codes row-packed for the rowwise copy, and packs each
column's 16 codes of a tile into the 8 bytes (one int64) they occupy in the transposed
copy. Rounding is RNE (the recipe) or SR; with SR the random word of element ``(n, k)``
is that of the rowwise flat index ``n * K + k``, and the columnwise copy is still the
transpose of the rowwise codes (it is not a separate SR draw of ``W^T``).

**Values mode** (``values=True``, the constexpr ``VALUES``): the rowwise copy is written as
its block-dequantized values ``e2m1(q) * f32(s_b)`` in bf16 ``[N, K]`` (exact, no global
scale), bit for bit ``dequantize.dequantize(data, scale, None, torch.bfloat16)`` of the
packed copy, for the Hopper GEMM emulation. There is no columnwise copy in this mode:
with 16x16 tiles the values of ``W^T`` are exactly the transpose (the caller uses
``.t()``).
"""

import torch
import triton
import triton.language as tl

from lowprec.checks import as_uint64, weight_values
from lowprec.copies import NVFP4Copy, RowCol

from . import nvfp4_math as nm
from .dequantize import block_value_bits
from .amax import amax_row_col
from .config import amax_argument, input_view, launch_options, tile_config


@triton.jit(do_not_specialize=["seed", "offset"])
def _quantize_2d_kernel(
        # Pointers: the weight w [N, K]; its amax (fp32 [1]) and where each copy's goes;
        w_ptr, amax_ptr, amax_out_ptr, col_amax_out_ptr,
        # the rowwise copy: codes [N, K/2] and scales [N, K/16] (uint8), or when VALUES
        # the bf16 values [N, K] (as int16) and an unread scale pointer;
        row_data_ptr, row_scale_ptr,
        # the transposed copy (read when COL): int64 words of 16 codes and scales.
        col_words_ptr, col_scale_ptr,
        # Sizes: w is [N, K].
        N, K,
        # Strides of w, in elements.
        stride_n, stride_k,
        # Stochastic rounding: the Philox key and the counter offset.
        seed: tl.uint64, offset: tl.uint64,
        # Meta-parameters: w's dtype (nvfp4_math.load_f32); the transposed copy or not; SR
        # or RNE; the tile (16 * CHUNKS rows by BLOCK_K columns); values mode (bf16
        # block-dequantized values of the rowwise copy, COL off).
        W_KIND: tl.constexpr, COL: tl.constexpr, STOCHASTIC: tl.constexpr,
        CHUNKS: tl.constexpr, BLOCK_K: tl.constexpr, VALUES: tl.constexpr = False):
    ROWS: tl.constexpr = 16 * CHUNKS
    TILES_K: tl.constexpr = BLOCK_K // 16
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_n * ROWS + tl.arange(0, ROWS)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    row_ok = rows < N
    col_ok = cols < K
    w = nm.load_f32(w_ptr + nm.offsets_2d(rows, cols, stride_n, stride_k),
                    row_ok[:, None] & col_ok[None, :], W_KIND)

    amax = nm.canonical_amax(tl.load(amax_ptr))
    if (pid_n == 0) & (pid_k == 0):
        tl.store(amax_out_ptr, amax)
        if COL:
            tl.store(col_amax_out_ptr, amax)
    factor, s_dec = nm.encode_constants(amax)

    tiles = tl.reshape(w, [CHUNKS, 16, TILES_K, 16])
    abs_tiles = nm.abs_bits(tiles)
    tile_amax = tl.max(tl.max(abs_tiles, axis=3), axis=1)                   # [CHUNKS, TILES_K]
    s_byte, enc = nm.block_scale_and_encode(tile_amax, factor, s_dec)
    words = None
    if STOCHASTIC:
        first = (rows.to(tl.int64) * K + pid_k * BLOCK_K) // 4            # i = n*K + k
        counters = first[:, None] + tl.arange(0, BLOCK_K // 4)[None, :]
        counters = counters.to(tl.uint64) + offset.to(tl.uint64)
        words = tl.reshape(nm.philox_words(seed, counters), [CHUNKS, 16, TILES_K, 16])
    codes = nm.encode_codes(abs_tiles, tiles, enc[:, None, :, None], words, STOCHASTIC)

    if VALUES:
        # Rowwise values [N, K]: each code times its tile's scale.
        bits = tl.reshape(block_value_bits(codes, s_byte[:, None, :, None]), [ROWS, BLOCK_K])
        tl.store(row_data_ptr + rows[:, None].to(tl.int64) * K + cols[None, :],
                 bits.to(tl.int16), mask=row_ok[:, None] & col_ok[None, :])
    else:
        # Rowwise copy: codes packed along K, the tile scale on each of its rows.
        data = nm.pack_pairs(tl.reshape(codes, [ROWS, BLOCK_K]), ROWS, BLOCK_K)
        half = pid_k * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)
        tl.store(row_data_ptr + rows[:, None].to(tl.int64) * (K // 2) + half[None, :], data,
                 mask=row_ok[:, None] & (half < K // 2)[None, :])
        row_scales = tl.reshape(tl.broadcast_to(s_byte[:, None, :], [CHUNKS, 16, TILES_K]),
                                [ROWS, TILES_K])
        tile_col = pid_k * TILES_K + tl.arange(0, TILES_K)
        tl.store(row_scale_ptr + rows[:, None].to(tl.int64) * (K // 16) + tile_col[None, :],
                 row_scales.to(tl.uint8),
                 mask=row_ok[:, None] & (tile_col < K // 16)[None, :])

    if COL:
        # Columnwise copy [K, N/2]: the 16 codes of column k in a tile are its 8 bytes.
        packed = nm.pack_column_words(tl.reshape(codes, [CHUNKS, 16, BLOCK_K]), CHUNKS, BLOCK_K)
        blk = pid_n * CHUNKS + tl.arange(0, CHUNKS)
        col_scales = tl.reshape(tl.broadcast_to(s_byte[:, :, None], [CHUNKS, TILES_K, 16]),
                                [CHUNKS, BLOCK_K])
        out = cols[None, :].to(tl.int64) * (N // 16) + blk[:, None]
        out_ok = (blk < N // 16)[:, None] & col_ok[None, :]
        tl.store(col_words_ptr + out, packed, mask=out_ok)
        tl.store(col_scale_ptr + out, col_scales.to(tl.uint8), mask=out_ok)


def quantize_2d(w, *, columnwise=True, stochastic=False, seed=0, offset=0, amax=None,
                tile=None, amax_tile=None, values=False):
    """16x16-tile NVFP4 of a 2-D ``w [N, K]`` (N, K multiples of 16; not validated here).

    Returns ``RowCol`` of ``NVFP4Copy`` (data uint8, scale float8_e4m3fn, amax fp32 0-d);
    ``col`` (the quantized ``W^T``, shapes ``[K, N/2]`` and ``[K, N/16]``) is None unless
    ``columnwise``. The two copies share the global amax (measured when ``amax`` is None).
    ``tile``, ``amax_tile``: None for today's launches, or the ``launches.Launch`` of a
    named variant for this kernel and for the amax kernel (same bits).
    ``values``: ``row`` is ``(values bfloat16 [N, K], empty float8_e4m3fn [0], amax)``
    (module docstring); needs ``columnwise=False`` (ValueError otherwise).
    """
    weight_values(columnwise, values)
    n, k = w.shape
    dev = w.device
    if amax is None:
        amax = amax_row_col(w, tile=amax_tile)[0:1]
    amax = amax_argument(amax, dev)
    u8 = torch.uint8
    if values:
        row_data = torch.empty(n, k, dtype=torch.bfloat16, device=dev)
        row_scale = torch.empty(0, dtype=u8, device=dev)
    else:
        row_data = torch.empty(n, k // 2, dtype=u8, device=dev)
        row_scale = torch.empty(n, k // 16, dtype=u8, device=dev)
    amax_out = torch.empty((), dtype=torch.float32, device=dev)
    col_amax_out = torch.empty((), dtype=torch.float32, device=dev) if columnwise else None
    col_data = torch.empty(k, n // 2, dtype=u8, device=dev) if columnwise else None
    col_scale = torch.empty(k, n // 16, dtype=u8, device=dev) if columnwise else None
    if w.numel() == 0:
        for out in (amax_out, col_amax_out):
            if out is not None:
                out.copy_(torch.where(torch.isfinite(amax[0]), amax[0], float("nan")))
    else:
        view, kind = input_view(w)
        if tile is None:
            chunks, block_k, warps = tile_config(n, k)
            options = dict(num_warps=warps, **launch_options())
        else:
            chunks, block_k, options = tile.chunks, tile.block_k, tile.options()
        grid = (triton.cdiv(n, 16 * chunks), triton.cdiv(k, block_k))
        # Values mode: bf16 values written as int16 bits; the pointers it does not use
        # are given that same tensor.
        row_arg = row_data.view(torch.int16) if values else row_data
        _quantize_2d_kernel[grid](
            w_ptr=view, amax_ptr=amax, amax_out_ptr=amax_out,
            col_amax_out_ptr=col_amax_out if columnwise else amax_out,
            row_data_ptr=row_arg, row_scale_ptr=row_arg if values else row_scale,
            col_words_ptr=col_data.view(torch.int64) if columnwise else row_arg,
            col_scale_ptr=col_scale if columnwise else (row_arg if values else row_scale),
            N=n, K=k, stride_n=view.stride(0), stride_k=view.stride(1),
            seed=as_uint64(seed), offset=as_uint64(offset),
            W_KIND=kind, COL=columnwise, STOCHASTIC=bool(stochastic),
            CHUNKS=chunks, BLOCK_K=block_k, VALUES=bool(values), **options)
    e4m3 = torch.float8_e4m3fn
    row = NVFP4Copy(row_data, row_scale.view(e4m3), amax_out)
    col = NVFP4Copy(col_data, col_scale.view(e4m3), col_amax_out) if columnwise else None
    return RowCol(row, col)
