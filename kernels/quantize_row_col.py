"""Fused NVFP4 1x16 quantization of activations and gradients (NUMERICS 2-7, 10).

One launch reads a ``[M, K]`` tensor x (bf16, fp16 or fp32, any strides) once and writes

* the **rowwise** copy: x quantized along K in blocks of 16 (fprop / dgrad operand),
  data ``[M, K/2]``, scales ``[M, K/16]``;
* when asked, the **columnwise** copy: ``x^T`` (``[K, M]``, M zero-padded to ``M_pad``, a
  multiple of 16) quantized along M, optionally after the 16-point RHT along M (the
  wgrad operand), data ``[K, M_pad/2]``, scales ``[K, M_pad/16]``.

Each copy has its own global amax (given by the caller, or measured first by
``amax.amax_row_col`` in one extra read) and its own rounding: RNE or stochastic with
Philox words from ``(seed, offset)``. The flat index ``i`` that picks a random word is
taken in the tensor as quantized (NUMERICS 4.1): ``m * K + k`` for the rowwise copy and
``k * M_pad + m`` for the columnwise one. Both copies share ``seed``; their counter
ranges are ``[row_offset, row_offset + ceil(M*K/4))`` and
``[col_offset, col_offset + K*M_pad/4)`` (mod 2^64), which the caller keeps disjoint;
``quantize_row_col`` defaults ``col_offset`` to the end of the row range.

A program owns a tile of ``16 * CHUNKS`` rows by ``BLOCK_K`` columns. The rowwise copy
blocks the tile's rows into 16-column groups; the columnwise copy blocks its columns into
16-row chunks, applies the RHT across each chunk (an in-register butterfly), and packs a
chunk's 16 codes of one column into the 8 contiguous bytes (one int64) they occupy in
the transposed copy, so the transpose costs no extra pass.

**Values mode** (``row_values`` / ``col_values``, the constexprs ``ROW_VALUES`` /
``COL_VALUES``, per copy): instead of codes and E4M3 scales, the copy is written as its
block-dequantized values ``e2m1(q) * f32(s_b)`` in
bf16, without the global scale (exact: at most 6 significant bits), bit for bit what
``dequantize.dequantize(data, scale, None, torch.bfloat16)`` gives for the packed copy
(every NaN the canonical one). The Hopper GEMM emulation reads them directly and skips
its dequantize launches. Rowwise: ``[M, K]``; columnwise: ``[K, M_pad]`` (a padded token
holds what dequantizing its packed code gives: +0, or NaN in a NaN block). The codes,
scales and random words are those of the packed mode; only the stores differ, and with
both False the kernel is the packed one.
"""

import torch
import triton
import triton.language as tl

from lowprec.checks import as_uint64
from lowprec.copies import NVFP4Copy, RowCol
from lowprec.shapes import padded16

from . import nvfp4_math as nm
from .dequantize import block_value_bits
from .amax import amax_row_col
from .config import (amax_argument, input_view, interpreting, launch_options, quarter_signs,
                     tile_config)


@triton.jit(do_not_specialize=["seed", "row_offset", "col_offset"])
def _quantize_row_col_kernel(
        # Pointers: the input x [M, K] and the 16 RHT signs (fp32, read when COL_RHT);
        x_ptr, signs_ptr,
        # the amax each copy is encoded with (fp32 [1]) and where each copy's amax goes;
        row_amax_ptr, col_amax_ptr, row_amax_out_ptr, col_amax_out_ptr,
        # the rowwise copy: codes [M, K/2] and scales [M, K/16] (uint8), or when VALUES
        # the bf16 values [M, K] (as int16) and an unread scale pointer;
        row_data_ptr, row_scale_ptr,
        # the columnwise copy of x^T: codes as int64 words of 16 codes [K, col_blocks]
        # and scales [K, col_blocks], or when VALUES the bf16 values [K, M_pad] (as int16)
        # and an unread scale pointer;
        col_words_ptr, col_scale_ptr,
        # the Philox key in device memory (int64 [1], its uint64 bits), read instead of
        # ``seed`` when SEED_IN_MEMORY: a CUDA graph's replay then uses the key its key
        # kernel just wrote, not the one frozen at capture.
        seed_ptr,
        # Sizes: x is [M, K]; col_blocks = M_pad / 16.
        M, K, col_blocks,
        # Strides of x, in elements.
        stride_m, stride_k,
        # Stochastic rounding: the Philox key and each copy's counter offset.
        seed: tl.uint64, row_offset: tl.uint64, col_offset: tl.uint64,
        # Meta-parameters: x's dtype (nvfp4_math.load_f32); which copies; RHT and SR per
        # copy; the tile (16 * CHUNKS rows by BLOCK_K columns); hardware bf16 rounding;
        # values mode (bf16 block-dequantized values instead of codes and scales).
        X_KIND: tl.constexpr, ROW: tl.constexpr, COL: tl.constexpr, COL_RHT: tl.constexpr,
        ROW_SR: tl.constexpr, COL_SR: tl.constexpr,
        CHUNKS: tl.constexpr, BLOCK_K: tl.constexpr, HW_BF16: tl.constexpr,
        ROW_VALUES: tl.constexpr = False, COL_VALUES: tl.constexpr = False,
        SEED_IN_MEMORY: tl.constexpr = False):
    ROWS: tl.constexpr = 16 * CHUNKS
    if SEED_IN_MEMORY:
        seed = tl.load(seed_ptr).to(tl.uint64, bitcast=True)
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    first_program = (pid_m == 0) & (pid_k == 0)
    rows = pid_m * ROWS + tl.arange(0, ROWS)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    row_ok = rows < M
    col_ok = cols < K
    x = nm.load_f32(x_ptr + nm.offsets_2d(rows, cols, stride_m, stride_k),
                    row_ok[:, None] & col_ok[None, :], X_KIND)

    if ROW:
        amax = nm.canonical_amax(tl.load(row_amax_ptr))
        if first_program:
            tl.store(row_amax_out_ptr, amax)
        factor, s_dec = nm.encode_constants(amax)
        blocks = tl.reshape(x, [ROWS, BLOCK_K // 16, 16])
        abs_blocks = nm.abs_bits(blocks)
        s_byte, enc = nm.block_scale_and_encode(tl.max(abs_blocks, axis=2), factor, s_dec)
        words = None
        if ROW_SR:
            # Element (m, k) is i = m*K + k: counter row_offset + i // 4, word i % 4.
            first = (rows.to(tl.int64) * K + pid_k * BLOCK_K) // 4
            counters = first[:, None] + tl.arange(0, BLOCK_K // 4)[None, :]
            counters = counters.to(tl.uint64) + row_offset.to(tl.uint64)
            words = tl.reshape(nm.philox_words(seed, counters), [ROWS, BLOCK_K // 16, 16])
        codes = nm.encode_codes(abs_blocks, blocks, enc[:, :, None], words, ROW_SR)
        if ROW_VALUES:
            bits = tl.reshape(block_value_bits(codes, s_byte[:, :, None]), [ROWS, BLOCK_K])
            tl.store(row_data_ptr + rows[:, None].to(tl.int64) * K + cols[None, :],
                     bits.to(tl.int16), mask=row_ok[:, None] & col_ok[None, :])
        else:
            data = nm.pack_pairs(tl.reshape(codes, [ROWS, BLOCK_K]), ROWS, BLOCK_K)
            half = pid_k * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)
            tl.store(row_data_ptr + rows[:, None].to(tl.int64) * (K // 2) + half[None, :],
                     data, mask=row_ok[:, None] & (half < K // 2)[None, :])
            sixteenth = pid_k * (BLOCK_K // 16) + tl.arange(0, BLOCK_K // 16)
            tl.store(row_scale_ptr + rows[:, None].to(tl.int64) * (K // 16)
                     + sixteenth[None, :], s_byte.to(tl.uint8),
                     mask=row_ok[:, None] & (sixteenth < K // 16)[None, :])

    if COL:
        amax = nm.canonical_amax(tl.load(col_amax_ptr))
        if first_program:
            tl.store(col_amax_out_ptr, amax)
        factor, s_dec = nm.encode_constants(amax)
        y = x
        if COL_RHT:
            y = nm.to_bf16(nm.rht_rows(x, signs_ptr, ROWS, BLOCK_K), HW_BF16)
        chunks = tl.reshape(y, [CHUNKS, 16, BLOCK_K])
        abs_chunks = nm.abs_bits(chunks)
        s_byte, enc = nm.block_scale_and_encode(tl.max(abs_chunks, axis=1), factor, s_dec)
        blk = pid_m * CHUNKS + tl.arange(0, CHUNKS)      # 16-row block index along M_pad
        words = None
        if COL_SR:
            # Element (k, m) of the [K, M_pad] copy is i = k*M_pad + m; the 16 rows of a
            # chunk use 4 consecutive counters, starting at (k*M_pad + 16*blk) // 4.
            first = cols[None, :].to(tl.int64) * (col_blocks * 4) + blk[:, None] * 4
            counters = first[:, None, :] + tl.arange(0, 4)[None, :, None]
            counters = counters.to(tl.uint64) + col_offset.to(tl.uint64)
            w = nm.philox_words(seed, counters)                  # [CHUNKS, 4, BLOCK_K, 2, 2]
            words = tl.reshape(tl.permute(w, (0, 1, 3, 4, 2)), [CHUNKS, 16, BLOCK_K])
        codes = nm.encode_codes(abs_chunks, chunks, enc[:, None, :], words, COL_SR)
        if COL_VALUES:
            # Element (m, k) of the tile is (k, m) of the [K, M_pad] values.
            bits = tl.reshape(block_value_bits(codes, s_byte[:, None, :]), [ROWS, BLOCK_K])
            out = cols[None, :].to(tl.int64) * (col_blocks * 16) + rows[:, None]
            out_ok = (rows < col_blocks * 16)[:, None] & col_ok[None, :]
            tl.store(col_words_ptr + out, bits.to(tl.int16), mask=out_ok)
        else:
            packed = nm.pack_column_words(codes, CHUNKS, BLOCK_K)
            out = cols[None, :].to(tl.int64) * col_blocks + blk[:, None]
            out_ok = (blk < col_blocks)[:, None] & col_ok[None, :]
            tl.store(col_words_ptr + out, packed, mask=out_ok)
            tl.store(col_scale_ptr + out, s_byte.to(tl.uint8), mask=out_ok)


def quantize_row_col(x, *, rowwise=True, columnwise=True, rht_signs=None,
                     row_stochastic=False, col_stochastic=False, seed=0, row_offset=0,
                     col_offset=0, row_amax=None, col_amax=None, tile=None, amax_tile=None,
                     row_values=False, col_values=False):
    """Launch the fused kernel on a 2-D ``x [M, K]`` (any strides; no validation here).

    Args:
        rowwise, columnwise: which copies to produce.
        rht_signs: the 16 RHT signs for the columnwise copy, or None for no RHT.
        row_stochastic, col_stochastic: SR per copy; row_offset, col_offset: ints in
            [0, 2^64); seed: an int in [0, 2^64), or a one-element int64 tensor on x's
            device holding its bits, read by the kernel (``lowprec.sr_keys`` device keys).
        row_amax, col_amax: global amaxes the caller has (fp32 scalar tensors; the
            columnwise one is that of RHT(x^T) when RHT is on); measured when None.
        tile, amax_tile: None for today's launches (``config.tile_config``), or the
            ``launches.Launch`` of a named variant (tile, warps, stages) for this kernel
            and for the amax kernel; the bits do not depend on them.
        row_values, col_values: write that copy as its bf16 block-dequantized values
            (module docstring).

    Returns:
        ``RowCol`` of ``NVFP4Copy`` (data uint8, scale float8_e4m3fn, amax fp32 0-d) or None;
        a copy in values mode is ``(values bfloat16, empty float8_e4m3fn [0], amax)``: rowwise
        ``[M, K]``, columnwise ``[K, M_pad]``.
    """
    m, k = x.shape
    m_pad = padded16(m)
    dev = x.device
    signs = quarter_signs(rht_signs, dev) if (columnwise and rht_signs is not None) else None
    need_row_amax = rowwise and row_amax is None
    need_col_amax = columnwise and col_amax is None
    if need_row_amax or need_col_amax:
        measured = amax_row_col(x, signs if need_col_amax else None, tile=amax_tile)
        row_amax = measured[0:1] if need_row_amax else row_amax
        col_amax = measured[1:2] if need_col_amax else col_amax
    row_amax_in = amax_argument(row_amax, dev) if rowwise else None
    col_amax_in = amax_argument(col_amax, dev) if columnwise else None

    row_out = _outputs(m, k, dev, row_values) if rowwise else None
    col_out = _outputs(k, m_pad, dev, col_values) if columnwise else None

    if x.numel() == 0:
        _finish_empty(row_out, row_amax_in, col_out, col_amax_in)
    else:
        view, kind = input_view(x)
        if tile is None:
            chunks, block_k, warps = tile_config(m, k)
            options = dict(num_warps=warps, **launch_options())
        else:
            chunks, block_k, options = tile.chunks, tile.block_k, tile.options()
        grid = (triton.cdiv(m, 16 * chunks), triton.cdiv(k, block_k))
        unused = view          # the pointer given for operands the meta-parameters switch off
        in_memory = isinstance(seed, torch.Tensor)
        _quantize_row_col_kernel[grid](
            x_ptr=view, signs_ptr=signs if signs is not None else unused,
            row_amax_ptr=row_amax_in if rowwise else unused,
            col_amax_ptr=col_amax_in if columnwise else unused,
            row_amax_out_ptr=row_out[2] if rowwise else unused,
            col_amax_out_ptr=col_out[2] if columnwise else unused,
            row_data_ptr=_data_view(row_out, row_values, torch.uint8) if rowwise else unused,
            row_scale_ptr=row_out[1] if rowwise and not row_values else unused,
            col_words_ptr=(_data_view(col_out, col_values, torch.int64) if columnwise
                           else unused),
            col_scale_ptr=col_out[1] if columnwise and not col_values else unused,
            M=m, K=k, col_blocks=m_pad // 16,
            stride_m=view.stride(0), stride_k=view.stride(1),
            seed_ptr=seed if in_memory else unused,
            seed=0 if in_memory else as_uint64(seed), row_offset=as_uint64(row_offset),
            col_offset=as_uint64(col_offset),
            X_KIND=kind, ROW=rowwise, COL=columnwise, COL_RHT=signs is not None,
            ROW_SR=bool(rowwise and row_stochastic),
            COL_SR=bool(columnwise and col_stochastic),
            CHUNKS=chunks, BLOCK_K=block_k, HW_BF16=not interpreting(),
            ROW_VALUES=bool(rowwise and row_values),
            COL_VALUES=bool(columnwise and col_values), SEED_IN_MEMORY=in_memory,
            **options)

    def finish(out):
        return None if out is None else NVFP4Copy(out[0], out[1].view(torch.float8_e4m3fn),
                                                  out[2])
    return RowCol(finish(row_out), finish(col_out))


def _outputs(rows, cols, device, values):
    """A copy's uninitialised (data, scale, amax) of an ``[rows, cols]`` quantization:
    codes uint8 ``[rows, cols/2]`` and scales uint8 ``[rows, cols/16]``, or with
    ``values`` bf16 ``[rows, cols]`` and a 0-element scale."""
    f32 = torch.float32
    if values:
        return (torch.empty(rows, cols, dtype=torch.bfloat16, device=device),
                torch.empty(0, dtype=torch.float8_e4m3fn, device=device),
                torch.empty((), dtype=f32, device=device))
    return (torch.empty(rows, cols // 2, dtype=torch.uint8, device=device),
            torch.empty(rows, cols // 16, dtype=torch.uint8, device=device),
            torch.empty((), dtype=f32, device=device))


def _data_view(out, values, packed_dtype):
    """The tensor the kernel writes a copy's data through: bf16 values as int16 bits, or
    the codes as ``packed_dtype`` (the columnwise copy stores int64 words)."""
    dtype = torch.int16 if values else packed_dtype
    return out[0] if out[0].dtype == dtype else out[0].view(dtype)


def _finish_empty(row_out, row_amax, col_out, col_amax):
    """Empty input: nothing to encode; the amax is 0, or the caller's (made canonical)."""
    for out, amax in ((row_out, row_amax), (col_out, col_amax)):
        if out is not None:
            value = amax.reshape(()) if amax is not None else out[2].new_zeros(())
            out[2].copy_(torch.where(torch.isfinite(value), value, float("nan")))
