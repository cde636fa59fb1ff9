"""Dequantization equals reference.dequantize_nvfp4 bit for bit (NaN as NaN)."""

import pytest
import torch

from lowprec import reference as R
from lowprec.kernels.dequantize import dequantize

OUT = [torch.float32, torch.bfloat16, torch.float16]


def quantized(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-8, 9, shape, generator=g))
    x[0, :16] = 0.0
    data, scale, amax = R.quantize_nvfp4(x)
    scale.view(torch.uint8)[min(1, shape[0] - 1), 0] = 0x7F             # one NaN scale
    return data, scale, amax


def assert_same(same_bits, got, want):
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got.cpu()), nan)
    same_bits(got.cpu()[~nan], want[~nan])


@pytest.mark.parametrize("shape", [(64, 128), (3, 48), (100, 512)])
@pytest.mark.parametrize("dtype", OUT)
def test_matches_reference(device, same_bits, shape, dtype):
    data, scale, amax = quantized(shape, seed=shape[0])
    for a in (amax, torch.tensor(float("inf")), torch.tensor(0.0), torch.tensor(3e-38),
              torch.tensor(float("nan"))):
        got = dequantize(data.to(device), scale.to(device), a.to(device), dtype)
        assert_same(same_bits, got, R.dequantize_nvfp4(data, scale, a, dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_block_dequantize_is_exact(device, same_bits, dtype):
    """Without the global scale, e2m1 * s_b is exact in bf16 and fp16 (GEMM operands)."""
    data, scale, _ = quantized((64, 256), seed=5)
    every_scale = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(16, 16)
    scale = torch.cat([scale, every_scale.view(torch.float8_e4m3fn)], dim=0)[:, :16]
    data = torch.cat([data, torch.randint(0, 256, (16, 128), dtype=torch.uint8)], dim=0)
    got = dequantize(data.to(device), scale.to(device), None, dtype)
    exact = R.block_dequantize_nvfp4(data, scale)
    assert_same(same_bits, got, exact.to(dtype))
    finite = torch.isfinite(exact)
    assert torch.equal(got.cpu().float()[finite], exact[finite])


def test_public_api(device, same_bits):
    import lowprec
    x = torch.randn(4, 32, 64)
    t = lowprec.quantize_nvfp4(x.to(device), backend="triton")
    got = lowprec.dequantize_nvfp4(t, torch.bfloat16, backend="triton")
    want = R.dequantize_nvfp4(t.data.cpu(), t.scale.cpu(), t.amax.cpu(), torch.bfloat16)
    assert got.shape == (4, 32, 64)
    same_bits(got, want)
