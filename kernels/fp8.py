"""FP8 (E4M3) with one FP32 scale per row, and the FP8 GEMM (NUMERICS 9).

Quantize: ``scale = amax_row / 448`` (1 for an all-zero row), ``q = e4m3_rne(clamp(x /
scale, -448, 448))`` with a correctly rounded division (``tl.div_rn``). A program owns
``BLOCK_R`` rows and walks K twice: once for the row amaxes (a NaN-propagating max on
the bits of |x|), once to encode; the second read of a row hits L2.

Both layouts of a Linear's operand (``quantize_fp8_row_col``: x per row along K for one
GEMM, x^T per row along M, i.e. x per column, for the other) in two launches and no copy
of x: a column-scale kernel (each program a stripe of columns, down all M rows), then a
fused kernel whose programs each own a tile of rows and encode every [rows, K-block] tile
twice, with the row scales (stored row-major) and with the column scales (stored
transposed). The scale and encoding arithmetic is one pair of helpers for all kernels.

GEMM: ``torch._scaled_mm`` with row-wise scales on GPUs with FP8 tensor cores (sm_89+)
for bf16 output (the combination cuBLASLt/CUTLASS support), FP32 accumulation
(``use_fast_accum=False``); anything else runs the reference emulation, which has the same
semantics: ``(qA @ qB^T in FP32) * scale_a * scale_b^T + bias``.
"""

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import FakeTensor

from lowprec import reference
from . import nvfp4_math as nm
from .config import (bias_view, epilogue_tile, input_view, interpreting,
                     launch_options, output_view)


@triton.jit
def _scale_of(amax_bits):
    """FP32 scales ``amax / 448`` (1 where the amax is 0, the canonical NaN for a NaN
    amax) of the int32 bits of |x| maxima."""
    amax = amax_bits.to(tl.float32, bitcast=True)              # Inf and NaN stay as they are
    scale = tl.where(amax == 0.0, 1.0, tl.div_rn(amax, 448.0))
    return tl.where(scale != scale, nm.nan_f32(), scale)     # the canonical NaN


@triton.jit
def _e4m3_bytes(x, scale):
    """E4M3 bytes (int32) of ``clamp(x / scale, -448, 448)``; ``scale`` has x's shape."""
    v = tl.div_rn(x, scale)
    v = tl.where(v > 448.0, 448.0, tl.where(v < -448.0, -448.0, v))   # NaN stays NaN
    _, byte = nm.e4m3_rne(v)
    return byte


@triton.jit
def _quantize_fp8_kernel(
        # Pointers: the input x [R, K], the E4M3 codes [R, K] (uint8) and the per-row
        # scales [R] (fp32).
        x_ptr, data_ptr, scale_ptr,
        # Sizes.
        R, K,
        # Strides of x, in elements.
        stride_r, stride_k,
        # Meta-parameters: x's dtype (nvfp4_math.load_f32); BLOCK_R rows per program,
        # walked along K in steps of BLOCK_K (twice: the amax, then the encoding).
        X_KIND: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < R

    amax_bits = tl.zeros([BLOCK_R], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        x = nm.load_f32(x_ptr + nm.offsets_2d(rows, cols, stride_r, stride_k),
                        row_ok[:, None] & (cols < K)[None, :], X_KIND)
        amax_bits = tl.maximum(amax_bits, tl.max(nm.abs_bits(x), axis=1))
    scale = _scale_of(amax_bits)
    tl.store(scale_ptr + rows, scale, mask=row_ok)

    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = row_ok[:, None] & (cols < K)[None, :]
        x = nm.load_f32(x_ptr + nm.offsets_2d(rows, cols, stride_r, stride_k), mask, X_KIND)
        byte = _e4m3_bytes(x, tl.broadcast_to(scale[:, None], [BLOCK_R, BLOCK_K]))
        tl.store(data_ptr + nm.offsets_2d(rows, cols, K, 1), byte.to(tl.uint8), mask=mask)


def quantize_fp8(x, tile=None):
    """Per-row E4M3 of ``x [..., K]``: ``(data float8_e4m3fn [..., K], scale fp32 [..., 1])``.

    ``tile``: a launch variant (``launches.Fp8Launch``: ``block_r``, ``block_k``,
    ``options()``) instead of today's tile; the bits never depend on it."""
    k = x.shape[-1]
    x2 = x.reshape(-1, k) if x.dim() != 2 else x
    r = x2.shape[0]
    data = torch.empty(r, k, dtype=torch.uint8, device=x.device)
    scale = torch.empty(r, 1, dtype=torch.float32, device=x.device)
    if x2.numel() > 0:
        view, kind = input_view(x2)
        if tile is not None:
            block_r, block_k, options = tile.block_r, tile.block_k, tile.options()
        else:
            options = dict(num_warps=4, **launch_options())
            if interpreting():
                block_r = min(64, triton.next_power_of_2(r))
                block_k = min(1024, triton.next_power_of_2(k))
            else:
                block_r, block_k = 4, 512
        _quantize_fp8_kernel[(triton.cdiv(r, block_r),)](
            x_ptr=view, data_ptr=data, scale_ptr=scale, R=r, K=k,
            stride_r=view.stride(0), stride_k=view.stride(1),
            X_KIND=kind, BLOCK_R=block_r, BLOCK_K=block_k, **options)
    elif k == 0:
        scale.fill_(1.0)
    lead = x.shape[:-1]
    return data.view(torch.float8_e4m3fn).reshape(*lead, k), scale.reshape(*lead, 1)


@triton.jit
def _column_scale_kernel(
        # Pointers: the input x [M, K] and the per-column scales [K] (fp32), the row
        # scales of x^T.
        x_ptr, col_scale_ptr,
        # Sizes.
        M, K,
        # Strides of x, in elements.
        stride_m, stride_k,
        # Meta-parameters: x's dtype (nvfp4_math.load_f32); BLOCK_C columns per program,
        # walked down all M rows in steps of BLOCK_M (one program per column: no atomics,
        # no partial maxima to combine, the same bits on every run).
        X_KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < K

    # Element-wise maxima of the tiles, reduced across rows once at the end (max on
    # integers: any order gives the same bits).
    amax_bits = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.int32)
    for m0 in range(0, M, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        x = nm.load_f32(x_ptr + nm.offsets_2d(rows, cols, stride_m, stride_k),
                        (rows < M)[:, None] & col_ok[None, :], X_KIND)
        amax_bits = tl.maximum(amax_bits, nm.abs_bits(x))
    tl.store(col_scale_ptr + cols, _scale_of(tl.max(amax_bits, axis=0)), mask=col_ok)


@triton.jit
def _quantize_fp8_row_col_kernel(
        # Pointers: the input x [M, K]; the rowwise copy: codes [M, K] (uint8) and row
        # scales [M] (fp32, written here); the columnwise copy, x^T's rows: codes [K, M]
        # (uint8) and column scales [K] (fp32, read: _column_scale_kernel wrote them).
        x_ptr, row_data_ptr, row_scale_ptr, col_data_ptr, col_scale_ptr,
        # Sizes.
        M, K,
        # Strides of x, in elements.
        stride_m, stride_k,
        # Meta-parameters: x's dtype (nvfp4_math.load_f32); BLOCK_R rows per program,
        # walked along K in steps of BLOCK_K (twice: the row amaxes, then the encodings).
        X_KIND: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < M

    amax_bits = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        x = nm.load_f32(x_ptr + nm.offsets_2d(rows, cols, stride_m, stride_k),
                        row_ok[:, None] & (cols < K)[None, :], X_KIND)
        amax_bits = tl.maximum(amax_bits, nm.abs_bits(x))
    row_scale = _scale_of(tl.max(amax_bits, axis=1))
    tl.store(row_scale_ptr + rows, row_scale, mask=row_ok)
    row_scale = tl.broadcast_to(row_scale[:, None], [BLOCK_R, BLOCK_K])

    # Each tile of x (its second read, from L2) gives both copies: the rowwise codes
    # stored row-major, the columnwise codes transposed into x^T's rows (runs of BLOCK_R
    # consecutive bytes).
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < K
        mask = row_ok[:, None] & col_ok[None, :]
        x = nm.load_f32(x_ptr + nm.offsets_2d(rows, cols, stride_m, stride_k), mask, X_KIND)
        byte = _e4m3_bytes(x, row_scale)
        tl.store(row_data_ptr + nm.offsets_2d(rows, cols, K, 1), byte.to(tl.uint8),
                 mask=mask)
        col_scale = tl.load(col_scale_ptr + cols, mask=col_ok, other=1.0)
        byte = _e4m3_bytes(x, tl.broadcast_to(col_scale[None, :], [BLOCK_R, BLOCK_K]))
        tl.store(col_data_ptr + nm.offsets_2d(cols, rows, M, 1), tl.trans(byte.to(tl.uint8)),
                 mask=tl.trans(mask))


def row_col_blocks(m, k):
    """``((BLOCK_M, BLOCK_C), (BLOCK_R, BLOCK_K), (warps, warps))``: the tiles of the
    column-scale and the fused kernel of ``quantize_fp8_row_col`` for x [m, k].

    GPU, column scales: 512 x 16. A program per 16 columns (32 bytes of a bf16 row: one
    full sector per row, 64 for fp32) keeps K / 16 programs busy (64 at K = 1024, half of
    an H100; a wider stripe would leave more SMs idle), and the 512 rows per step give
    each of the 8 warps 32 elements, 16 KiB of loads in flight per program.
    GPU, fused: 32 x 128, 4 warps (32 elements per thread, like the other quantizers). 32
    rows make each transposed run of the columnwise codes 32 bytes, one full sector, so
    its stores waste no bandwidth while M / 32 programs (256 at M = 8192) stay enough to
    fill the GPU; taller tiles halve that. The rowwise stores write 128-byte runs.
    Interpreter: tiles sized to the small test shapes, smaller than them in both dims so
    the tests walk several tiles and partial ones (bits never depend on the tiling).
    """
    if interpreting():
        return ((min(32, triton.next_power_of_2(max(m, 1))),
                 min(16, triton.next_power_of_2(max(k, 1)))),
                (min(16, triton.next_power_of_2(max(m, 1))),
                 min(64, triton.next_power_of_2(max(k, 1)))), (4, 4))
    return (512, 16), (32, 128), (8, 4)


def quantize_fp8_row_col(x, tile=None):
    """Both per-row E4M3 layouts of a 2-D ``x [M, K]`` (fp32, bf16 or fp16, any strides):
    ``(row_data float8_e4m3fn [M, K], row_scale fp32 [M, 1], col_data float8_e4m3fn
    [K, M], col_scale fp32 [K, 1])``, bit for bit ``quantize_fp8(x)`` and
    ``quantize_fp8(x.t().contiguous())``, in two launches (the column scales, then both
    encodings) and without a transposed copy of x. A row or column with no elements gets
    scale 1, as in ``quantize_fp8``.

    ``tile``: a launch variant (``launches.Fp8RowColLaunch``: ``column`` and ``fused``,
    each a launch with ``block_r`` (rows per step / per program), ``block_k`` (columns
    per program / per step) and ``options()``, or None for today's) instead of
    ``row_col_blocks``' tiles; the bits never depend on it.
    """
    if x.dim() != 2:
        raise ValueError(f"quantize_fp8_row_col expects a 2-D tensor; got shape "
                         f"{tuple(x.shape)}")
    view, kind = input_view(x)
    m, k = x.shape
    row_data = torch.empty(m, k, dtype=torch.uint8, device=x.device)
    row_scale = torch.empty(m, 1, dtype=torch.float32, device=x.device)
    col_data = torch.empty(k, m, dtype=torch.uint8, device=x.device)
    col_scale = torch.empty(k, 1, dtype=torch.float32, device=x.device)
    (block_m, block_c), (block_r, block_k), (warps_c, warps_r) = row_col_blocks(m, k)
    options_c = dict(num_warps=warps_c, **launch_options())
    options_r = dict(num_warps=warps_r, **launch_options())
    if tile is not None and tile.column is not None:
        block_m, block_c, options_c = tile.column.block_r, tile.column.block_k, \
            tile.column.options()
    if tile is not None and tile.fused is not None:
        block_r, block_k, options_r = tile.fused.block_r, tile.fused.block_k, \
            tile.fused.options()
    # Empty x: the kernels still write the scales of the rows (or columns) it has, 1 each
    # (their loops over the missing dimension do nothing), so there is no fill launch.
    if k > 0:
        _column_scale_kernel[(triton.cdiv(k, block_c),)](
            x_ptr=view, col_scale_ptr=col_scale, M=m, K=k,
            stride_m=view.stride(0), stride_k=view.stride(1),
            X_KIND=kind, BLOCK_M=block_m, BLOCK_C=block_c, **options_c)
    if m > 0:
        _quantize_fp8_row_col_kernel[(triton.cdiv(m, block_r),)](
            x_ptr=view, row_data_ptr=row_data, row_scale_ptr=row_scale,
            col_data_ptr=col_data, col_scale_ptr=col_scale, M=m, K=k,
            stride_m=view.stride(0), stride_k=view.stride(1),
            X_KIND=kind, BLOCK_R=block_r, BLOCK_K=block_k, **options_r)
    e4m3 = torch.float8_e4m3fn
    return row_data.view(e4m3), row_scale, col_data.view(e4m3), col_scale


@triton.jit
def _scale_epilogue_kernel(
        # Pointers: the unscaled FP32 product [M, N] (row stride ``stride_acc``), the row
        # scales of A [M] and of B [N] (fp32), the bias [N] (read when HAS_BIAS) and the
        # output [M, N] (contiguous).
        acc_ptr, a_scale_ptr, b_scale_ptr, bias_ptr, out_ptr,
        # Sizes, and the accumulator's row stride in elements.
        M, N, stride_acc,
        # Meta-parameters: bias or not and its dtype; the output dtype; the tile.
        HAS_BIAS: tl.constexpr, BIAS_KIND: tl.constexpr, OUT_KIND: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    acc = tl.load(acc_ptr + rows[:, None].to(tl.int64) * stride_acc + cols[None, :],
                  mask=mask, other=0.0)
    a_scale = tl.load(a_scale_ptr + rows, mask=row_ok, other=1.0)
    b_scale = tl.load(b_scale_ptr + cols, mask=col_ok, other=1.0)
    # reference.fp8_gemm's order: (acc * scale_a) * scale_b, then + bias, one rounding.
    out = acc * a_scale[:, None] * b_scale[None, :]
    if HAS_BIAS:
        out = out + nm.load_f32(bias_ptr + cols, col_ok, BIAS_KIND)[None, :]
    nm.store_cast(out_ptr + rows[:, None].to(tl.int64) * N + cols[None, :], out, mask,
                  OUT_KIND)


def scale_epilogue(acc, a_scale, b_scale, bias, out_dtype):
    """``(acc * a_scale * b_scale^T + bias)`` rounded once to ``out_dtype``, one launch.

    ``acc``: the unscaled FP32 product ``[M, N]`` (unit stride along N); ``a_scale [M, 1]``
    and ``b_scale [N, 1]`` FP32; ``bias [N]`` or None.
    """
    m, n = acc.shape
    out = torch.empty(m, n, dtype=out_dtype, device=acc.device)
    if out.numel() == 0:
        return out
    out_arg, out_kind = output_view(out)
    bias_arg, bias_kind = bias_view(bias, out_arg)
    block_m, block_n = epilogue_tile(m, n)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _scale_epilogue_kernel[grid](
        acc_ptr=acc, a_scale_ptr=a_scale.reshape(-1).float().contiguous(),
        b_scale_ptr=b_scale.reshape(-1).float().contiguous(), bias_ptr=bias_arg,
        out_ptr=out_arg, M=m, N=n, stride_acc=acc.stride(0), HAS_BIAS=bias is not None,
        BIAS_KIND=bias_kind, OUT_KIND=out_kind, BLOCK_M=block_m, BLOCK_N=block_n,
        num_warps=4, **launch_options())
    return out


# FP8 tensor cores: sm_89 (Ada) and newer.
FP8_MMA_CAPABILITY = (8, 9)

# The unit scale of the tensor-wise GEMM, one per device: made once, not on every call
# (a fill launch each time). Never a fake tensor (a trace's), which a real call would get.
_ONES = {}


def _one(device):
    one = _ONES.get(device)
    if one is None:
        one = torch.ones((), dtype=torch.float32, device=device)
        if not isinstance(one, FakeTensor):
            _ONES[device] = one
    return one


# Below sm_89 (no FP8 tensor cores) the GEMM has no fast form: the codes are decoded to
# FP32 and multiplied with torch.matmul (cuBLAS FP32 on a GPU), the reference's
# arithmetic; named for what it is, not as the reference backend.
EMULATED_GEMM = "emulated:fp8_gemm(decode + fp32 torch.matmul, no FP8 tensor cores)"


def gemm_implementation(capability):
    """What ``fp8_gemm`` runs for CUDA tensors of ``capability`` (None: CPU tensors)."""
    if capability is not None and capability >= FP8_MMA_CAPABILITY:
        return "torch:_scaled_mm"
    return EMULATED_GEMM


def _pad16(data, dim):
    """Zero-pad a float8 tensor along ``dim`` to a multiple of 16 (cuBLASLt's alignment);
    zero codes add exact zeros to every dot product."""
    missing = reference.padded16(data.shape[dim]) - data.shape[dim]
    if missing == 0:
        return data
    pad = (0, missing) if dim == 1 else (0, 0, 0, missing)
    return torch.nn.functional.pad(data.view(torch.uint8), pad).view(data.dtype)


def _scaled_mm(a_data, a_scale, b_data, b_scale, bias, out_dtype):
    """FP32-accumulated FP8 GEMM on tensor cores, NUMERICS 9's arithmetic.

    bf16 output without a bias: torch's row-wise scaled GEMM does it all (scales applied
    to the FP32 accumulator, one rounding). With a bias, or any other output: the unscaled
    product in FP32 (``scale=1``, tensor-wise, exact), then ``acc * scale_a * scale_b^T +
    bias`` in FP32 and one rounding, the reference's order. The row-wise GEMM is not given
    the bias: on an H200 (torch 2.11) it missed NUMERICS 9's bound, adding the bias after
    the output was already rounded (tests/kernels/test_fp8.py::test_gemm_semantics). The
    scaling, bias and rounding after the tensor-wise GEMM are one launch
    (``scale_epilogue``).
    """
    m, n = a_data.shape[0], b_data.shape[0]
    a = _pad16(a_data.contiguous(), 1)
    b = _pad16(_pad16(b_data.contiguous(), 1), 0)
    if out_dtype == torch.bfloat16 and bias is None:
        pad_n = b.shape[0] - n
        scale_b = b_scale.reshape(1, -1).float()      # FP32 already: no copy
        if pad_n:
            scale_b = torch.nn.functional.pad(scale_b, (0, pad_n), value=1.0)
        out = torch._scaled_mm(a, b.t(), scale_a=a_scale.reshape(-1, 1).float().contiguous(),
                               scale_b=scale_b.contiguous(), out_dtype=out_dtype,
                               use_fast_accum=False)
        return out[:, :n]
    one = _one(a.device)
    acc = torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.float32,
                           use_fast_accum=False)[:m, :n]
    return scale_epilogue(acc, a_scale, b_scale, bias, out_dtype)


def gemm_for(capability):
    """The FP8 GEMM for CUDA tensors of ``capability`` (None: CPU tensors), with the
    signature of ``fp8_gemm``."""
    if gemm_implementation(capability) == "torch:_scaled_mm":
        return _scaled_mm_gemm
    return reference.fp8_gemm


def _scaled_mm_gemm(a_data, a_scale, b_data, b_scale, bias=None, out_dtype=torch.bfloat16):
    return _scaled_mm(a_data, a_scale, b_data, b_scale, bias, out_dtype)


def fp8_gemm(a_data, a_scale, b_data, b_scale, bias=None, out_dtype=torch.bfloat16):
    """``a [M, K] @ b [N, K]^T`` of per-row-scaled E4M3 operands, FP32 accumulation."""
    capability = (torch.cuda.get_device_capability(a_data.device)
                  if a_data.is_cuda and not interpreting() else None)
    return gemm_for(capability)(a_data, a_scale, b_data, b_scale, bias=bias,
                                out_dtype=out_dtype)
