"""Native NVFP4 GEMM on Blackwell (sm_100): cuBLASLt's block-scaled FP4 path via torch.

The argument preparation (``scaled_mm_arguments``) is a pure function, tested on CPU
against torch's own reference layout helper; the call itself runs only on sm_100 (the
README's hardware table says where it has run).

The torch API (checked against torch 2.11-2.13 sources):

* ``torch.nn.functional.scaled_mm(mat_a, mat_b, scale_a, scale_recipe_a, scale_b,
  scale_recipe_b, swizzle_a, swizzle_b, bias, output_dtype, ...)`` with, per operand,
  the two-level NVFP4 recipe ``[ScalingType.BlockWise1x16, ScalingType.TensorWise]``,
  scales ``[block scales (float8_e4m3fn, swizzled), global decode scale (fp32, 1 elem)]``
  and swizzles ``[SwizzleType.SWIZZLE_32_4_4, SwizzleType.NO_SWIZZLE]``. torch computes
  ``alpha = global_a * global_b`` (one FP32 multiply, on the device) and hands it to
  cuBLASLt, which scales the FP32 accumulator once: NUMERICS 8's
  ``alpha = S_dec(A) * S_dec(B)`` exactly.
* ``mat_a`` is ``[M, K/2]`` of dtype ``torch.float4_e2m1fn_x2`` (row-major), ``mat_b``
  is ``[K/2, N]`` column-major, i.e. the transpose of our ``[N, K/2]`` data. Both use our
  packing (even element in the low nibble, sign in bit 3).
* Block scales: rows padded to 128 and scale columns to 4 with zeros, 128x4 tiles of 512
  contiguous bytes (``reference.swizzle_scales``, NUMERICS 8); torch checks only their
  element count and contiguity.
* Older torch without ``F.scaled_mm``: ``torch._scaled_mm(mat_a, mat_b, scale_a,
  scale_b, out_dtype=...)`` does the single-level block-scaled GEMM; alpha is then
  applied here, once, to the FP32 output (same arithmetic).

Without a bias the GEMM writes the output dtype itself (alpha applied to the FP32
accumulator, one rounding); with a bias it writes FP32, the bias is added in FP32 and
the result cast afterwards, as NUMERICS 8 orders it (torch's fused bias would require a
bf16 output). Both operands' swizzled scales and global decode scales are one Triton
launch (``kernels.scaled_mm_scales``), so a GEMM costs two launches.

What this torch offers is asked once, at import (``TORCH_REASON``, ``TWO_LEVEL_API``);
the compute capability once per device, by the kernel table (``backends.cuda``); per
call only the shape (``shape_reason``).
"""

from collections import namedtuple

import torch
import torch.nn.functional as F

from lowprec.kernels.scaled_mm_scales import scaled_mm_scales

# Native FP4 tensor cores: sm_100 and newer.
MIN_CAPABILITY = (10, 0)

ScaledMMArguments = namedtuple(
    "ScaledMMArguments", ["mat_a", "mat_b", "scale_a", "scale_b", "global_a", "global_b"])


def scaled_mm_arguments(a_data, a_scale, a_amax, b_data, b_scale, b_amax):
    """The tensors torch's block-scaled FP4 GEMM takes, from two NVFP4 operands.

    Args:
        a_data: uint8 ``[M, K/2]``; a_scale: float8_e4m3fn ``[M, K/16]``; a_amax: FP32 0-d.
        b_data: uint8 ``[N, K/2]``; b_scale: float8_e4m3fn ``[N, K/16]``; b_amax: FP32 0-d.

    Returns:
        ScaledMMArguments: ``mat_a`` float4_e2m1fn_x2 ``[M, K/2]`` (a view of a_data),
        ``mat_b`` float4_e2m1fn_x2 ``[K/2, N]`` (a transposed view of b_data), swizzled
        block scales ``scale_a``/``scale_b`` (1-D), and the FP32 one-element global decode
        scales ``global_a``/``global_b`` (S_dec = 1 / S_enc of each amax).
    """
    scale_a, scale_b, global_scales = scaled_mm_scales(a_scale, a_amax, b_scale, b_amax)
    return ScaledMMArguments(
        mat_a=a_data.view(torch.float4_e2m1fn_x2),
        mat_b=b_data.view(torch.float4_e2m1fn_x2).t(),
        scale_a=scale_a,
        scale_b=scale_b,
        global_a=global_scales[0:1],
        global_b=global_scales[1:2],
    )


def _torch_reason():
    if not hasattr(torch, "float4_e2m1fn_x2"):
        return f"torch {torch.__version__} has no float4_e2m1fn_x2 dtype"
    if not (hasattr(F, "scaled_mm") or hasattr(torch, "_scaled_mm")):
        return f"torch {torch.__version__} has neither F.scaled_mm nor torch._scaled_mm"
    return None


# None where this torch has the native FP4 GEMM's API, else why not.
TORCH_REASON = _torch_reason()
# torch's two-level API (F.scaled_mm, a global scale per operand); else the one-level
# torch._scaled_mm, with alpha applied here.
TWO_LEVEL_API = (hasattr(F, "scaled_mm") and hasattr(F, "ScalingType")
                 and hasattr(F, "SwizzleType"))


def shape_reason(a_data):
    """None where the native GEMM takes operands of this K, else why not (cuBLASLt wants
    16-byte aligned rows of FP4 data: K % 32 == 0)."""
    if a_data.shape[-1] % 16 != 0:
        return f"the native FP4 GEMM needs K % 32 == 0; got K={a_data.shape[-1] * 2}"
    return None


def _scaled_mm(args, output_dtype):
    """``alpha * deq(A) @ deq(B)^T`` (per-block scales inside), rounded once to
    ``output_dtype`` from the FP32 product."""
    if TWO_LEVEL_API:
        recipe = [F.ScalingType.BlockWise1x16, F.ScalingType.TensorWise]
        swizzle = [F.SwizzleType.SWIZZLE_32_4_4, F.SwizzleType.NO_SWIZZLE]
        return F.scaled_mm(args.mat_a, args.mat_b, [args.scale_a, args.global_a], recipe,
                           [args.scale_b, args.global_b], recipe, swizzle_a=swizzle,
                           swizzle_b=swizzle, output_dtype=output_dtype)
    out = torch._scaled_mm(args.mat_a, args.mat_b, args.scale_a, args.scale_b,
                           out_dtype=torch.float32)
    return (out * (args.global_a * args.global_b)).to(output_dtype)


def nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
               out_dtype=torch.bfloat16):
    """NUMERICS 8 on Blackwell: same contract as ``reference.nvfp4_gemm`` (2-D ``a``).

    Without a bias the GEMM writes ``out_dtype`` itself: cuBLASLt scales the FP32
    accumulator by alpha in FP32 and rounds once, the order NUMERICS 8 gives, and the
    FP32 round trip through memory (and a cast launch) is saved. With a bias the GEMM
    writes FP32 and the bias is added before the cast here, as NUMERICS 8 orders it
    (torch's fused bias needs a bf16 output and does not document its rounding)."""
    args = scaled_mm_arguments(a_data, a_scale, a_amax, b_data, b_scale, b_amax)
    if bias is None:
        return _scaled_mm(args, out_dtype)
    return (_scaled_mm(args, torch.float32) + bias.to(torch.float32)).to(out_dtype)
