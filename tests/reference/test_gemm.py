"""GEMM semantics (NUMERICS 8, 9): FP32 accumulation bound, alpha applied once, bias.

Every op runs with backend="reference" (on CPU "auto" would pick the C++ backend)."""

import functools

import pytest
import torch

import lowprec
from lowprec import reference as R

quantize_nvfp4 = functools.partial(lowprec.quantize_nvfp4, backend="reference")
nvfp4_gemm = functools.partial(lowprec.nvfp4_gemm, backend="reference")
quantize_fp8 = functools.partial(lowprec.quantize_fp8, backend="reference")
fp8_gemm = functools.partial(lowprec.fp8_gemm, backend="reference")

U = 2.0 ** -24


def gamma(n):
    return n * U / (1 - n * U)


@pytest.mark.parametrize("m,n,k", [(1, 16, 16), (33, 48, 256), (128, 64, 1024)])
def test_nvfp4_gemm_within_the_fp32_accumulation_bound(m, n, k):
    torch.manual_seed(m + n + k)
    x = torch.randn(m, k) * torch.logspace(-2, 2, k)
    w = torch.randn(n, k)
    a, b = quantize_nvfp4(x), quantize_nvfp4(w, block="16x16")
    out = nvfp4_gemm(a, b, out_dtype=torch.float32).double()
    da, db = a.dequantize().double(), b.dequantize().double()
    exact = da @ db.T
    # Block products are exact in FP32; the K-term sum costs gamma_K; the dequantized
    # operands, alpha and its multiplication add a few more unit roundoffs.
    bound = (gamma(k) + 6 * U) * (da.abs() @ db.abs().T)
    assert ((out - exact).abs() <= bound).all()


def test_alpha_is_applied_once_to_the_fp32_accumulator():
    torch.manual_seed(7)
    # Every block has amax 5.3 (one element pinned), so each operand has a single block
    # scale and the accumulator is exact: out must be exactly fl(acc * alpha).
    codes_a = torch.randint(0, 16, (32, 64), dtype=torch.uint8)
    codes_b = torch.randint(0, 16, (16, 64), dtype=torch.uint8)
    x = R.e2m1_values(codes_a) * 0.7
    w = R.e2m1_values(codes_b) * 1.9
    x[:, ::16], w[:, ::16] = 6 * 0.7, 6 * 1.9
    a, b = quantize_nvfp4(x), quantize_nvfp4(w)
    assert len(a.scale.view(torch.uint8).unique()) == 1 == len(b.scale.view(torch.uint8).unique())
    acc = a.block_dequantize().double() @ b.block_dequantize().double().T
    assert torch.equal(acc.float().double(), acc)                      # exact in FP32
    alpha = R.global_decode_scale(a.amax) * R.global_decode_scale(b.amax)
    expected = acc.float() * alpha
    out = nvfp4_gemm(a, b, out_dtype=torch.float32)
    assert torch.equal(out, expected)
    # Folding the global scales into the operands rounds differently: the test can tell.
    folded = a.dequantize() @ b.dequantize().T
    assert not torch.equal(folded, expected)
    bias = torch.randn(16)
    with_bias = nvfp4_gemm(a, b, bias=bias, out_dtype=torch.float32)
    assert torch.equal(with_bias, expected + bias)
    assert torch.equal(nvfp4_gemm(a, b, bias=bias),
                       (expected + bias).to(torch.bfloat16))


def test_gemm_leading_dims_and_rht_operands():
    torch.manual_seed(8)
    x, w = torch.randn(2, 3, 64), torch.randn(32, 64)
    a, b = quantize_nvfp4(x), quantize_nvfp4(w)
    out = nvfp4_gemm(a, b)
    flat = nvfp4_gemm(quantize_nvfp4(x.reshape(6, 64)), b)
    assert out.shape == (2, 3, 32) and torch.equal(out.reshape(6, 32), flat)
    ar, br = quantize_nvfp4(x, rht=True), quantize_nvfp4(w, rht=True)
    assert nvfp4_gemm(ar, br).shape == (2, 3, 32)
    with pytest.raises(ValueError, match="RHT"):
        nvfp4_gemm(ar, b)


def test_nan_input_poisons_only_what_reads_it():
    x, w = torch.randn(4, 32), torch.randn(8, 32)
    x[2, 3] = float("nan")
    out = nvfp4_gemm(quantize_nvfp4(x), quantize_nvfp4(w))
    assert torch.isnan(out).all()               # the whole operand's scales are NaN
    out = nvfp4_gemm(quantize_nvfp4(x, amax=10.0), quantize_nvfp4(w))
    assert torch.isnan(out[2]).all() and torch.isfinite(out[[0, 1, 3]]).all()


def test_fp8_rowwise_quantization():
    torch.manual_seed(9)
    x = torch.randn(6, 48) * 3
    x[4] = 0
    q = quantize_fp8(x)
    assert q.data.dtype == torch.float8_e4m3fn and q.scale.shape == (6, 1)
    amax = x.abs().amax(-1, keepdim=True)
    expected_scale = torch.where(amax == 0, torch.ones(()), amax / 448)
    assert torch.equal(q.scale, expected_scale)
    expected = (x / expected_scale).clamp(-448, 448).to(torch.float8_e4m3fn)
    assert torch.equal(q.data.view(torch.uint8), expected.view(torch.uint8))
    assert (q.data.float().abs().amax(-1)[[0, 1, 2, 3, 5]] == 448).all()
    assert torch.equal(q.dequantize()[4], torch.zeros(48))


def test_fp8_gemm_semantics():
    torch.manual_seed(10)
    x, w, bias = torch.randn(5, 64), torch.randn(7, 64), torch.randn(7)
    a, b = quantize_fp8(x), quantize_fp8(w)
    out = fp8_gemm(a, b, bias=bias, out_dtype=torch.float32).double()
    acc = a.data.double() @ b.data.double().T
    exact = acc * a.scale.double() * b.scale.double().T + bias.double()
    scale_mag = a.scale.double() * b.scale.double().T
    bound = (gamma(64) + 3 * U) * (a.data.double().abs() @ b.data.double().abs().T) * scale_mag
    assert ((out - exact).abs() <= bound + U * bias.double().abs()).all()


def test_fp8_nan_row_stays_nan():
    x = torch.randn(3, 32)
    x[1, 0] = float("nan")
    q = quantize_fp8(x)
    assert torch.isnan(q.dequantize()[1]).all() and torch.isfinite(q.dequantize()[[0, 2]]).all()
