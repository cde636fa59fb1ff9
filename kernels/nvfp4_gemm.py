"""NVFP4 GEMM for GPUs without FP4 tensor cores (Hopper and older), NUMERICS 8.

``out = alpha * sum_k deq(A)[m, k] deq(B)[n, k]`` (+ bias), with ``deq = e2m1 * s_b`` (no
global scale), products and sums in FP32, ``alpha = S_dec(A) * S_dec(B)`` applied once to
the FP32 accumulator, then the bias, then one rounding to the output dtype. One "TN"
entry (both operands K-major: ``A [M, K]``, ``B [N, K]``) serves fprop, dgrad and wgrad.

Candidates, benchmarked side by side by ``bench/bench_nvfp4_gemm.py``:

(a) ``gemm_fused``: a Triton GEMM that reads the packed codes and E4M3 scales, dequantizes
    each tile in registers and feeds the tensor cores (FP32 accumulation). It needs no
    scratch memory. The operands are formed in **fp16**, not bf16: ``e2m1 * s_b`` has at
    most 6 significant bits and lies in [2^-10, 2688], so it is exact in fp16 as in bf16
    (fp16 tensor cores run at the bf16 rate), and fp16 lets Hopper convert codes with its
    E4M3 -> fp16 instruction: an E2M1 nibble ``s e1 e0 m`` re-spelled as the E4M3 byte
    ``s 0 0 e1 e0 m 0 0`` has the value ``e2m1 * 2^-6`` (normal and subnormal alike), and
    ``s_b * 2^6`` restores the scale, both exactly. Needs fp8 support in Triton (sm_89+).
(b) ``gemm_dequant_mm``: a bandwidth-bound kernel dequantizes both operands to bf16
    (exact), ``torch.mm(..., out_dtype=torch.float32)`` (cuBLAS, bf16 tensor cores, FP32
    accumulation and FP32 output, so nothing is rounded before alpha), then a fused
    epilogue kernel applies alpha and the bias and rounds once. Scratch: ``(M + N) * K``
    bf16 plus ``M * N`` fp32. (A bf16-output ``torch.mm`` would round the accumulator
    to bf16 before alpha, which NUMERICS 8 forbids; on CPU the product runs in fp32.)
(c) ``gemm_dequant_triton``: the dequantization of (b), to fp16, then the kernel of (a)
    reading fp16 tiles with alpha and bias in its epilogue (no FP32 round trip).

``nvfp4_gemm`` picks per shape from ``DISPATCH`` (measured on a GPU; until then (b),
the one whose speed rests on cuBLAS rather than on an unmeasured Triton kernel).
"""

import torch
import triton
import triton.language as tl

from . import nvfp4_math as nm
from .config import (amax_argument, bias_view, epilogue_tile, interpreting, launch_options,
                     output_view)
from .dequantize import dequantize, unpack_codes

# (M, N, K) -> "fused" | "dequant_mm" | "dequant_triton": the fastest candidate per shape,
# as bench/bench_nvfp4_gemm.py prints it on a GPU. Shapes not listed use DEFAULT_CANDIDATE.
DISPATCH = {}
DEFAULT_CANDIDATE = "dequant_mm"


# ----------------------------------------------------------------------------------
# (a) fused: dequantize in registers, fp16 tensor cores, FP32 accumulator
# ----------------------------------------------------------------------------------

@triton.jit
def _dequantize_tile(packed, scale_bytes, ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    """[ROWS, BLOCK_K/2] codes + [ROWS, BLOCK_K/16] scale bytes -> [ROWS, BLOCK_K] fp16
    holding e2m1 * s_b exactly (see the module docstring for the E4M3 re-spelling)."""
    codes = unpack_codes(packed, ROWS, BLOCK_K // 2)
    as_e4m3 = (((codes & 8) << 4) | ((codes & 7) << 2)).to(tl.uint8)
    values = as_e4m3.to(tl.float8e4nv, bitcast=True).to(tl.float16)            # e2m1 * 2^-6
    scales = (nm.e4m3_byte_to_f32(scale_bytes.to(tl.int32)) * 64.0).to(tl.float16)  # s_b * 2^6
    tiles = tl.reshape(values, [ROWS, BLOCK_K // 16, 16]) * scales[:, :, None]
    return tl.reshape(tiles, [ROWS, BLOCK_K])


@triton.jit
def _epilogue(acc, a_amax_ptr, b_amax_ptr, bias_ptr, out_ptr, rows, cols, M, N,
              HAS_BIAS: tl.constexpr, BIAS_KIND: tl.constexpr, OUT_KIND: tl.constexpr):
    """out = acc * alpha (+ bias), rounded once; alpha = S_dec(A) * S_dec(B) in FP32."""
    alpha = (nm.global_decode_scale(tl.load(a_amax_ptr))
             * nm.global_decode_scale(tl.load(b_amax_ptr)))
    out = acc * alpha
    if HAS_BIAS:
        out = out + nm.load_f32(bias_ptr + cols, cols < N, BIAS_KIND)[None, :]
    nm.store_cast(out_ptr + rows[:, None].to(tl.int64) * N + cols[None, :], out,
                  (rows < M)[:, None] & (cols < N)[None, :], OUT_KIND)


@triton.jit
def _load_operand(data_ptr, scale_ptr, rows, ok, k0, K,
                  ROWS: tl.constexpr, BLOCK_K: tl.constexpr, PREDEQUANTIZED: tl.constexpr):
    """One [ROWS, BLOCK_K] fp16 operand tile holding e2m1 * s_b: dequantized here from
    packed codes + scale bytes, or read as is (candidate c, an fp16 copy made earlier)."""
    r64 = rows[:, None].to(tl.int64)
    if PREDEQUANTIZED:
        ks = k0 + tl.arange(0, BLOCK_K)
        return tl.load(data_ptr + r64 * K + ks[None, :], mask=ok & (ks < K)[None, :], other=0.0)
    half = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    blk = k0 // 16 + tl.arange(0, BLOCK_K // 16)
    packed = tl.load(data_ptr + r64 * (K // 2) + half[None, :],
                     mask=ok & (half < K // 2)[None, :], other=0)
    scale = tl.load(scale_ptr + r64 * (K // 16) + blk[None, :],
                    mask=ok & (blk < K // 16)[None, :], other=0)
    return _dequantize_tile(packed, scale, ROWS, BLOCK_K)


@triton.jit
def _gemm_kernel(
        # Pointers: the operands A [M, K] and B [N, K] (codes and scales, or fp16 tiles
        # when PREDEQUANTIZED), their amaxes (fp32 [1]), the bias [N] (read when HAS_BIAS)
        # and the output [M, N] (contiguous).
        a_data_ptr, a_scale_ptr, b_data_ptr, b_scale_ptr,
        a_amax_ptr, b_amax_ptr, bias_ptr, out_ptr,
        # Sizes (every operand is contiguous: no strides).
        M, N, K,
        # Meta-parameters: the operand form; bias or not and its dtype; the output dtype;
        # the tile and the grouping of programs along M for L2 reuse.
        PREDEQUANTIZED: tl.constexpr, HAS_BIAS: tl.constexpr,
        BIAS_KIND: tl.constexpr, OUT_KIND: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr):
    # Grouped launch order: GROUP_M row-blocks share each B column-block while it is in L2.
    pid = tl.program_id(0)
    blocks_m = tl.cdiv(M, BLOCK_M)
    blocks_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * blocks_n)
    first_m = group * GROUP_M
    group_size = tl.minimum(blocks_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * blocks_n)) % group_size
    pid_n = (pid % (GROUP_M * blocks_n)) // group_size

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    a_ok = (rows < M)[:, None]
    b_ok = (cols < N)[:, None]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = _load_operand(a_data_ptr, a_scale_ptr, rows, a_ok, k0, K, BLOCK_M, BLOCK_K,
                          PREDEQUANTIZED)
        b = _load_operand(b_data_ptr, b_scale_ptr, cols, b_ok, k0, K, BLOCK_N, BLOCK_K,
                          PREDEQUANTIZED)
        acc = tl.dot(a, tl.trans(b), acc)            # fp16 x fp16 -> FP32 accumulator
    _epilogue(acc, a_amax_ptr, b_amax_ptr, bias_ptr, out_ptr, rows, cols, M, N,
              HAS_BIAS, BIAS_KIND, OUT_KIND)


def gemm_config(m, n, k):
    """(BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages) for ``_gemm_kernel``."""
    if interpreting():
        return (min(64, triton.next_power_of_2(m)), min(64, triton.next_power_of_2(n)),
                min(128, triton.next_power_of_2(k)), 8, 4, 1)
    return 128, 128, 128, 8, 8, 3


def _launch_gemm(a, a_scale, a_amax, b, b_scale, b_amax, bias, out_dtype, predequantized,
                 config):
    m, n = a.shape[0], b.shape[0]
    k = a.shape[1] if predequantized else a.shape[1] * 2
    out = torch.empty(m, n, dtype=out_dtype, device=a.device)
    if out.numel() == 0:
        return out
    out_arg, out_kind = output_view(out)
    bias_arg, bias_kind = bias_view(bias, out_arg)
    bm, bn, bk, group_m, warps, stages = config or gemm_config(m, n, k)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    _gemm_kernel[grid](
        a_data_ptr=a, a_scale_ptr=a_scale, b_data_ptr=b, b_scale_ptr=b_scale,
        a_amax_ptr=amax_argument(a_amax), b_amax_ptr=amax_argument(b_amax), bias_ptr=bias_arg,
        out_ptr=out_arg, M=m, N=n, K=k,
        PREDEQUANTIZED=predequantized, HAS_BIAS=bias is not None, BIAS_KIND=bias_kind,
        OUT_KIND=out_kind, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group_m,
        num_warps=warps, num_stages=stages, **launch_options())
    return out


def gemm_fused(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
               out_dtype=torch.bfloat16, config=None):
    """Candidate (a). Operands: codes ``[M, K/2]`` / ``[N, K/2]`` uint8, scales
    ``[M, K/16]`` / ``[N, K/16]`` float8_e4m3fn, amaxes fp32 0-d."""
    return _launch_gemm(a_data, a_scale.view(torch.uint8), a_amax, b_data,
                        b_scale.view(torch.uint8), b_amax, bias, out_dtype, False, config)


def gemm_dequant_triton(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
                        out_dtype=torch.bfloat16, config=None):
    """Candidate (c): the bandwidth-bound dequantization of (b), to fp16 (exact, as in
    (a)), then the GEMM kernel of (a) reading fp16 tiles, with alpha and bias fused into
    its epilogue: no FP32 round trip through memory. Scratch: ``(M + N) * K`` fp16."""
    a = dequantize(a_data, a_scale, None, torch.float16)
    b = dequantize(b_data, b_scale, None, torch.float16)
    return _launch_gemm(a, a, a_amax, b, b, b_amax, bias, out_dtype, True, config)


# ----------------------------------------------------------------------------------
# (b) dequantize to bf16 + torch.mm with an FP32 result + fused epilogue
# ----------------------------------------------------------------------------------

@triton.jit
def _epilogue_kernel(
        # Pointers: the fp32 accumulator [M, N], the amaxes (fp32 [1]), the bias [N] (read
        # when HAS_BIAS) and the output [M, N] (all contiguous).
        acc_ptr, a_amax_ptr, b_amax_ptr, bias_ptr, out_ptr,
        # Sizes.
        M, N,
        # Meta-parameters: bias or not and its dtype; the output dtype; the tile.
        HAS_BIAS: tl.constexpr, BIAS_KIND: tl.constexpr, OUT_KIND: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    acc = tl.load(acc_ptr + rows[:, None].to(tl.int64) * N + cols[None, :], mask=mask, other=0.0)
    _epilogue(acc, a_amax_ptr, b_amax_ptr, bias_ptr, out_ptr, rows, cols, M, N,
              HAS_BIAS, BIAS_KIND, OUT_KIND)


def gemm_dequant_mm(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
                    out_dtype=torch.bfloat16):
    """Candidate (b); same operands as ``gemm_fused``."""
    a = dequantize(a_data, a_scale, None, torch.bfloat16)      # e2m1 * s_b, exact
    b = dequantize(b_data, b_scale, None, torch.bfloat16)
    return gemm_values(a, a_amax, b, b_amax, bias, out_dtype)


def gemm_values(a_values, a_amax, b_values, b_amax, bias=None, out_dtype=torch.bfloat16):
    """The GEMM of (b) on operands already dequantized (``e2m1 * s_b`` in bf16, no global
    scale: what the quantizers write in values mode, or ``dequantize(..., None, bf16)``):
    ``a [M, K] @ b [N, K]^T`` in FP32 (``torch.mm`` with FP32 output on a GPU, so nothing
    is rounded before alpha), then one epilogue launch: alpha, bias, one rounding.
    ``b`` may be a transposed view (dgrad multiplies by W's values as they are)."""
    if a_values.is_cuda:
        acc = torch.mm(a_values, b_values.t(), out_dtype=torch.float32)
    else:
        acc = a_values.float() @ b_values.float().t()
    m, n = acc.shape
    out = torch.empty(m, n, dtype=out_dtype, device=acc.device)
    if out.numel() == 0:
        return out
    out_arg, out_kind = output_view(out)
    bias_arg, bias_kind = bias_view(bias, out_arg)
    block_m, block_n = epilogue_tile(m, n)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _epilogue_kernel[grid](acc_ptr=acc, a_amax_ptr=amax_argument(a_amax),
                           b_amax_ptr=amax_argument(b_amax), bias_ptr=bias_arg, out_ptr=out_arg,
                           M=m, N=n, HAS_BIAS=bias is not None, BIAS_KIND=bias_kind,
                           OUT_KIND=out_kind,
                           BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4,
                           **launch_options())
    return out


def dequantize_values(data, scale):
    """The bf16 values (``e2m1 * s_b``, no global scale) of a packed operand, for
    ``gemm_values``: one launch."""
    return dequantize(data, scale, None, torch.bfloat16)


# ----------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------

def fused_supported(device):
    """Candidate (a) needs Triton's fp8 conversions: sm_89+ on CUDA, or the interpreter."""
    if interpreting():
        return True
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


CANDIDATES = {"fused": gemm_fused, "dequant_mm": gemm_dequant_mm,
              "dequant_triton": gemm_dequant_triton}
# What each candidate runs, as ``lowprec info --dispatch`` names it.
CANDIDATE_NAMES = {"fused": "triton:nvfp4_gemm(fused dequant)",
                   "dequant_mm": "dequant+torch.mm", "dequant_triton": "dequant+triton:gemm"}


def choose_candidate(m, n, k, device):
    choice = DISPATCH.get((m, n, k), DEFAULT_CANDIDATE)
    if choice == "fused" and not fused_supported(device):
        return "dequant_mm"
    return choice


def nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
               out_dtype=torch.bfloat16, candidate=None):
    """``A [M, K] @ B [N, K]^T`` of NVFP4 operands (NUMERICS 8); ``candidate`` forces one
    of ``CANDIDATES``, else the dispatch table decides."""
    m, n, k = a_data.shape[0], b_data.shape[0], a_data.shape[1] * 2
    impl = CANDIDATES[candidate or choose_candidate(m, n, k, a_data.device)]
    return impl(a_data.contiguous(), a_scale.contiguous(), a_amax,
                b_data.contiguous(), b_scale.contiguous(), b_amax,
                bias=bias, out_dtype=out_dtype)
