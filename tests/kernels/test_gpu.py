"""Large shapes on a GPU (``pytest -m gpu``): the kernels compiled for the device.

Every other test in this directory also runs on the GPU when one is present (the
``device`` fixture); these add the sizes the interpreter cannot reach: 4096 x 4096 and
Llama-3 linear shapes. For finite random data the reference gives the same bits on CUDA
tensors as on CPU ones (IEEE FP32 operations, RNE casts), so it runs on the GPU here.
"""

import pytest
import torch

from lowprec import reference as R
from lowprec.kernels.backend import quantize_row_col, quantize_weight_2d
from lowprec.kernels.fp8 import fp8_gemm, quantize_fp8
from lowprec.kernels.nvfp4_gemm import CANDIDATES

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SIGNS = R.DEFAULT_SIGN_VECTOR

# (tokens M, in-features K): activations and gradients of Llama-3 8B / 70B linears.
ACTIVATIONS = [(4096, 4096), (8192, 4096), (8190, 4096), (8192, 14336), (8192, 8192)]
# (out-features N, in-features K) weights.
WEIGHTS = [(4096, 4096), (6144, 4096), (14336, 4096), (4096, 14336), (8192, 8192)]


def pad_rows(x):
    m = x.shape[0]
    return torch.cat([x, x.new_zeros(-m % 16, x.shape[1])]) if m % 16 else x


@pytest.mark.parametrize("m,k", ACTIVATIONS)
@pytest.mark.parametrize("stochastic", [False, True])
def test_fused_quantize_large(same_triple, m, k, stochastic):
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    row, col = quantize_row_col(
        x, rht_signs=SIGNS, row_stochastic=stochastic, col_stochastic=stochastic,
        seed=2**63 + 1, row_offset=2**64 - 7, col_offset=2**33)
    same_triple(row, R.quantize_nvfp4(x, stochastic=stochastic, seed=2**63 + 1,
                                      offset=2**64 - 7))
    same_triple(col, R.quantize_nvfp4(pad_rows(x).t(), rht_signs=SIGNS, stochastic=stochastic,
                                      seed=2**63 + 1, offset=2**33))


@pytest.mark.parametrize("n,k", WEIGHTS)
def test_weight_quantize_large(same_triple, n, k):
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
    row, col = quantize_weight_2d(w)
    same_triple(row, R.quantize_nvfp4(w, block="16x16"))
    same_triple(col, R.quantize_nvfp4(w.t().contiguous(), block="16x16"))


def test_fp8_quantize_large(same_bits):
    x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16)
    data, scale = quantize_fp8(x)
    want_data, want_scale = R.quantize_fp8_rowwise(x)
    same_bits(data, want_data)
    same_bits(scale, want_scale)


def fp32_bound(a, b, k):
    mags = (R.block_dequantize_nvfp4(a[0], a[1]).abs()
            @ R.block_dequantize_nvfp4(b[0], b[1]).abs().t())
    return 2 * k * 2.0**-24 * mags * R.global_decode_scale(a[2]) * R.global_decode_scale(b[2])


@pytest.mark.parametrize("candidate", sorted(CANDIDATES))
@pytest.mark.parametrize("m,n,k", [(2048, 4096, 4096), (1000, 6144, 4096), (4096, 1024, 14336)])
def test_nvfp4_gemm_large(candidate, m, n, k):
    a = R.quantize_nvfp4(torch.randn(m, k, device="cuda"))
    b = R.quantize_nvfp4(torch.randn(n, k, device="cuda") * 0.02)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    got = CANDIDATES[candidate](*a, *b, bias=bias, out_dtype=torch.float32)
    # The reference's own matmul may use TF32 on the GPU: compute it in float64 instead.
    deq = [R.block_dequantize_nvfp4(*t[:2]).double() for t in (a, b)]
    alpha = (R.global_decode_scale(a[2]) * R.global_decode_scale(b[2])).double()
    want = deq[0] @ deq[1].t() * alpha + bias.double()
    slack = fp32_bound(a, b, k).double() * 2 + want.abs() * 2.0**-23
    assert ((got.double() - want).abs() <= slack).all()
    rounded = CANDIDATES[candidate](*a, *b, bias=bias, out_dtype=torch.bfloat16)
    assert torch.equal(rounded, got.to(torch.bfloat16))


def test_fp8_gemm_large():
    a = quantize_fp8(torch.randn(2048, 4096, device="cuda"))
    b = quantize_fp8(torch.randn(1024, 4096, device="cuda"))
    got = fp8_gemm(*a, *b, out_dtype=torch.bfloat16).double()
    qa, qb = a[0].double(), b[0].double()
    want = (qa @ qb.t()) * a[1].double() * b[1].double().t()
    slack = (2 * 4096 * 2.0**-24 * (qa.abs() @ qb.abs().t()) * a[1].double()
             * b[1].double().t() + want.abs() * 2.0**-8)
    assert ((got - want).abs() <= slack).all()


@pytest.mark.parametrize("m,n,k,out_dtype", [(40, 24, 40, torch.float32),
                                             (33, 20, 48, torch.bfloat16),
                                             (64, 48, 32, torch.float16)])
def test_fp8_gemm_any_shape_and_output_on_tensor_cores(m, n, k, out_dtype):
    """K and N not multiples of 16 and non-bf16 outputs take torch._scaled_mm too (zero
    padding, FP32 product then the scales): within the FP32 accumulation bound
    (2 K u |qa||qb| ssb) of the exact float64 result, plus one rounding to ``out_dtype``."""
    gen = torch.Generator().manual_seed(m * n)
    a = quantize_fp8(torch.randn(m, k, generator=gen).cuda())
    b = quantize_fp8(torch.randn(n, k, generator=gen).cuda())
    bias = torch.randn(n, generator=gen).cuda().to(out_dtype)
    got = fp8_gemm(*a, *b, bias=bias, out_dtype=out_dtype).double()
    qa, qb = a[0].double(), b[0].double()
    scales = a[1].double() * b[1].double().t()
    want = (qa @ qb.t()) * scales + bias.double()
    unit = torch.finfo(out_dtype).eps / 2
    slack = (2 * k * 2.0**-24 * (qa.abs() @ qb.abs().t()) * scales
             + (want.abs() + bias.double().abs()) * (unit + 2.0**-23))
    assert got.shape == (m, n)
    assert ((got - want).abs() <= slack).all()
