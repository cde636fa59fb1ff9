"""FP8 (E4M3) with one FP32 scale per row, and the FP8 GEMM (NUMERICS 9).

Quantize: ``scale = amax_row / 448`` (1 for an all-zero row), ``q = e4m3_rne(clamp(x /
scale, -448, 448))`` with a correctly rounded division (``tl.div_rn``). A program owns
``BLOCK_R`` rows and walks K twice: once for the row amaxes (a NaN-propagating max on
the bits of |x|), once to encode; the second read of a row hits L2.

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
    amax = amax_bits.to(tl.float32, bitcast=True)              # Inf and NaN stay as they are
    scale = tl.where(amax == 0.0, 1.0, tl.div_rn(amax, 448.0))
    scale = tl.where(scale != scale, nm.nan_f32(), scale)     # the canonical NaN
    tl.store(scale_ptr + rows, scale, mask=row_ok)

    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = row_ok[:, None] & (cols < K)[None, :]
        x = nm.load_f32(x_ptr + nm.offsets_2d(rows, cols, stride_r, stride_k), mask, X_KIND)
        v = tl.div_rn(x, tl.broadcast_to(scale[:, None], [BLOCK_R, BLOCK_K]))
        v = tl.where(v > 448.0, 448.0, tl.where(v < -448.0, -448.0, v))   # NaN stays NaN
        _, byte = nm.e4m3_rne(v)
        tl.store(data_ptr + nm.offsets_2d(rows, cols, K, 1), byte.to(tl.uint8), mask=mask)


def quantize_fp8(x):
    """Per-row E4M3 of ``x [..., K]``: ``(data float8_e4m3fn [..., K], scale fp32 [..., 1])``."""
    k = x.shape[-1]
    x2 = x.reshape(-1, k) if x.dim() != 2 else x
    r = x2.shape[0]
    data = torch.empty(r, k, dtype=torch.uint8, device=x.device)
    scale = torch.empty(r, 1, dtype=torch.float32, device=x.device)
    if x2.numel() > 0:
        view, kind = input_view(x2)
        if interpreting():
            block_r = min(64, triton.next_power_of_2(r))
            block_k = min(1024, triton.next_power_of_2(k))
        else:
            block_r, block_k = 4, 512
        _quantize_fp8_kernel[(triton.cdiv(r, block_r),)](
            x_ptr=view, data_ptr=data, scale_ptr=scale, R=r, K=k,
            stride_r=view.stride(0), stride_k=view.stride(1),
            X_KIND=kind, BLOCK_R=block_r, BLOCK_K=block_k, num_warps=4, **launch_options())
    elif k == 0:
        scale.fill_(1.0)
    lead = x.shape[:-1]
    return data.view(torch.float8_e4m3fn).reshape(*lead, k), scale.reshape(*lead, 1)


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
