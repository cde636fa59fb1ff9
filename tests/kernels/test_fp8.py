"""Per-row FP8 (E4M3) quantization equals the reference; the FP8 GEMM keeps its semantics."""

import pytest
import torch

import lowprec
from lowprec import reference as R
from lowprec.kernels.fp8 import fp8_gemm, quantize_fp8

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def sample(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-20, 20, shape, generator=g))
    rows = x.reshape(-1, shape[-1])
    rows[0] = 0.0                                           # zero row: scale 1
    if dtype == torch.float32:
        rows[1, :4] = torch.tensor([1e-40, -3e-45, 3e38, -3e38])
    return x.to(dtype)


@pytest.mark.parametrize("shape,dtype", [((64, 128), "f32"), ((100, 200), "bf16"),
                                         ((3, 5, 48), "f16"), ((7, 2000), "f32")])
def test_matches_reference(device, same_bits, shape, dtype):
    x = sample(shape, DTYPES[dtype], seed=shape[-1])
    data, scale = quantize_fp8(x.to(device))
    want_data, want_scale = R.quantize_fp8_rowwise(x)
    same_bits(data, want_data)
    same_bits(scale, want_scale)


def test_non_finite_rows(device, same_bits):
    x = sample((8, 64), torch.float32, seed=1)
    x[2, 5] = float("nan")
    x[3, 6] = float("inf")
    x[4, 7] = -float("inf")
    data, scale = quantize_fp8(x.to(device))
    want_data, want_scale = R.quantize_fp8_rowwise(x)
    # NaN included (Inf/Inf, NaN / scale): every NaN is the canonical 0x7F / 0x7FC00000.
    same_bits(scale, want_scale)
    same_bits(data, want_data)


def test_gemm_semantics(device):
    a = lowprec.quantize_fp8(torch.randn(40, 64, device=device), backend="triton")
    b = lowprec.quantize_fp8(torch.randn(24, 64, device=device), backend="triton")
    bias = torch.randn(24, device=device).to(torch.bfloat16)
    got = fp8_gemm(a.data, a.scale, b.data, b.scale, bias=bias).float().cpu()
    want = R.fp8_gemm(a.data.cpu(), a.scale.cpu(), b.data.cpu(), b.scale.cpu(),
                      bias=bias.cpu(), out_dtype=torch.float32)
    # Summation order may differ (tensor cores): FP32 accumulation error plus one bf16
    # rounding of the output.
    bound = (64 * 2**-24 * (a.data.float().abs() @ b.data.float().abs().t()).cpu()
             * a.scale.cpu() * b.scale.cpu().t() + want.abs() * 2**-8)
    assert ((got - want).abs() <= bound).all()
