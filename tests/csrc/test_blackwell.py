"""The Blackwell GEMM path (lowprec/blackwell.py) without Blackwell.

The argument preparation is checked against an independent statement of cuBLAS's scale
layout and against a CPU emulation of what the block-scaled FP4 GEMM computes from those
arguments; the torch call is checked by intercepting it. The GEMM itself runs only on
sm_100, not here."""

import pytest
import torch
import torch.nn.functional as F
from csrc_helpers import assert_bits_equal, make_values

from lowprec import blackwell
from lowprec import reference as R

SHAPES = [(1, 16, 16), (33, 64, 48), (130, 160, 16), (256, 512, 384)]  # (M, K, N)


def operands(m, k, n):
    a = R.quantize_nvfp4(make_values((m, k), torch.bfloat16, "heavy", m))
    b = R.quantize_nvfp4(make_values((n, k), torch.bfloat16, "normal", n))
    return a, b


def emulate_block_scaled_gemm(args, m, n, k):
    """FP32 `alpha * deq(mat_a) @ deq(mat_b)`, read from the prepared arguments only."""
    a_codes = args.mat_a.view(torch.uint8)                     # [M, K/2]
    b_codes = args.mat_b.view(torch.uint8).t()                 # [N, K/2]
    a_scale = R.unswizzle_scales(args.scale_a, m, k // 16)
    b_scale = R.unswizzle_scales(args.scale_b, n, k // 16)
    a = R.block_dequantize_nvfp4(a_codes, a_scale)
    b = R.block_dequantize_nvfp4(b_codes, b_scale)
    return (a @ b.T) * (args.global_a * args.global_b)


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_arguments_have_the_layouts_torch_expects(m, k, n):
    (ad, asc, aam), (bd, bsc, bam) = operands(m, k, n)
    args = blackwell.scaled_mm_arguments(ad, asc, aam, bd, bsc, bam)
    assert args.mat_a.dtype == torch.float4_e2m1fn_x2 and args.mat_a.shape == (m, k // 2)
    assert args.mat_a.is_contiguous()
    assert args.mat_b.dtype == torch.float4_e2m1fn_x2 and args.mat_b.shape == (k // 2, n)
    assert args.mat_b.stride() == (1, k // 2)                  # column-major [K/2, N]
    assert args.mat_b.data_ptr() == bd.data_ptr()              # a view, no copy
    for scale, rows in ((args.scale_a, m), (args.scale_b, n)):
        assert scale.dtype == torch.float8_e4m3fn and scale.is_contiguous()
        assert scale.numel() == -(-rows // 128) * 128 * -(-(k // 16) // 4) * 4
    for glob, amax in ((args.global_a, aam), (args.global_b, bam)):
        assert glob.dtype == torch.float32 and glob.shape == (1,)
        assert_bits_equal(glob, R.global_decode_scale(amax).reshape(1))


def blocked_layout(scale):
    """cuBLAS's block-scaling-factor layout, written as tensor reshapes (independent of
    the reference's index formula): pad to 128 rows x 4 columns with zeros; each 128x4
    tile is 32 lines of 16 bytes, line i holding rows i, i+32, i+64, i+96 (4 bytes each);
    tiles in row-block-major order."""
    rows, cols = scale.shape
    padded = torch.zeros(-(-rows // 128) * 128, -(-cols // 4) * 4, dtype=torch.uint8)
    padded[:rows, :cols] = scale.view(torch.uint8)
    tiles = padded.reshape(-1, 128, padded.shape[1] // 4, 4).permute(0, 2, 1, 3)  # [rb, cb, 128, 4]
    lines = tiles.reshape(*tiles.shape[:2], 4, 32, 4).permute(0, 1, 3, 2, 4)      # [rb, cb, i, q, c]
    return lines.reshape(-1)


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_swizzle_is_the_cublas_block_layout(m, k, n):
    (ad, asc, aam), (bd, bsc, bam) = operands(m, k, n)
    args = blackwell.scaled_mm_arguments(ad, asc, aam, bd, bsc, bam)
    assert torch.equal(args.scale_a.view(torch.uint8), blocked_layout(asc))
    assert torch.equal(args.scale_b.view(torch.uint8), blocked_layout(bsc))


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_arguments_carry_the_reference_product(m, k, n):
    (ad, asc, aam), (bd, bsc, bam) = operands(m, k, n)
    args = blackwell.scaled_mm_arguments(ad, asc, aam, bd, bsc, bam)
    assert_bits_equal(emulate_block_scaled_gemm(args, m, n, k),
                      R.nvfp4_gemm(ad, asc, aam, bd, bsc, bam, out_dtype=torch.float32))


@pytest.mark.parametrize("api", ["scaled_mm", "_scaled_mm"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_the_torch_call_and_the_epilogue(api, with_bias, monkeypatch):
    """Intercept the torch call: the recipe and swizzles are as documented, alpha is
    applied once; with a bias the GEMM writes FP32 and the bias is added in FP32 before
    the cast, without one the two-level API writes bf16 itself."""
    m, k, n = 33, 64, 48
    (ad, asc, aam), (bd, bsc, bam) = operands(m, k, n)
    calls = []

    def fake_scaled_mm(mat_a, mat_b, scale_a, recipe_a, scale_b, recipe_b, swizzle_a=None,
                       swizzle_b=None, output_dtype=None, **_):
        calls.append((recipe_a, recipe_b, swizzle_a, swizzle_b, output_dtype))
        args = blackwell.ScaledMMArguments(mat_a, mat_b, scale_a[0], scale_b[0], scale_a[1],
                                           scale_b[1])
        return emulate_block_scaled_gemm(args, m, n, k).to(output_dtype)

    def fake_v1(mat_a, mat_b, scale_a, scale_b, out_dtype=None):
        calls.append(out_dtype)
        one = torch.ones(1)
        return emulate_block_scaled_gemm(
            blackwell.ScaledMMArguments(mat_a, mat_b, scale_a, scale_b, one, one), m, n, k)

    monkeypatch.setattr(blackwell, "TWO_LEVEL_API", api == "scaled_mm")
    if api == "scaled_mm":
        monkeypatch.setattr(F, "scaled_mm", fake_scaled_mm, raising=False)
    else:
        monkeypatch.setattr(torch, "_scaled_mm", fake_v1)
    bias = torch.randn(n) if with_bias else None
    out = blackwell.nvfp4_gemm(ad, asc, aam, bd, bsc, bam, bias=bias, out_dtype=torch.bfloat16)
    assert_bits_equal(out, R.nvfp4_gemm(ad, asc, aam, bd, bsc, bam, bias=bias,
                                        out_dtype=torch.bfloat16))
    if api == "scaled_mm":
        recipe = [F.ScalingType.BlockWise1x16, F.ScalingType.TensorWise]
        swizzle = [F.SwizzleType.SWIZZLE_32_4_4, F.SwizzleType.NO_SWIZZLE]
        gemm_out = torch.float32 if with_bias else torch.bfloat16
        assert calls == [(recipe, recipe, swizzle, swizzle, gemm_out)]
    else:
        assert calls == [torch.float32]
