"""NVFP4 GEMM candidates against the reference, within the FP32 accumulation bound.

The operands are exact (``e2m1 * s_b`` fits fp16 and bf16), so the only freedom NUMERICS 8
leaves is the order of the FP32 sums: |got - ref| <= 2 K u (|A| |B|^T) alpha, u = 2^-24,
plus one rounding of the output. (The interpreter runs ``tl.dot`` on fp16 in numpy; bf16
dots are GPU-only, which is why the Triton candidates form fp16 operands.)
"""

import pytest
import torch

import lowprec
from lowprec import reference as R
from lowprec.kernels.nvfp4_gemm import CANDIDATES, nvfp4_gemm

SHAPES = [(64, 32, 128), (100, 48, 256), (7, 16, 64), (130, 80, 512)]


def operand(rows, k, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return R.quantize_nvfp4(torch.randn(rows, k, generator=g) * scale)


def bound(a, b, k):
    """2 K u (|A| |B|^T) alpha: the FP32 summation-order bound (callers add the rounding
    of the output)."""
    mags = (R.block_dequantize_nvfp4(a[0], a[1]).abs()
            @ R.block_dequantize_nvfp4(b[0], b[1]).abs().t())
    alpha = R.global_decode_scale(a[2]) * R.global_decode_scale(b[2])
    return 2 * k * 2**-24 * mags * alpha


def run(candidate, a, b, device, **kwargs):
    to = [t.to(device) for t in (*a, *b)]
    return CANDIDATES[candidate](*to, **kwargs).cpu()


@pytest.mark.parametrize("candidate", sorted(CANDIDATES))
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_within_fp32_bound(device, candidate, m, n, k):
    a, b = operand(m, k, seed=m), operand(n, k, seed=n, scale=1e-3)
    bias = torch.randn(n).to(torch.bfloat16)
    got = run(candidate, a, b, device, bias=bias.to(device), out_dtype=torch.float32)
    want = R.nvfp4_gemm(*a, *b, bias=bias, out_dtype=torch.float32)
    slack = bound(a, b, k) + want.abs() * 2**-23
    assert ((got - want).abs() <= slack).all()


@pytest.mark.parametrize("candidate", sorted(CANDIDATES))
def test_output_rounded_once(device, same_bits, candidate):
    """bf16 / fp16 outputs are the FP32 result (alpha and bias applied) rounded once."""
    a, b = operand(72, 128, seed=1), operand(40, 128, seed=2)
    bias = torch.randn(40)
    fp32 = run(candidate, a, b, device, bias=bias.to(device), out_dtype=torch.float32)
    for dtype in (torch.bfloat16, torch.float16):
        got = run(candidate, a, b, device, bias=bias.to(device), out_dtype=dtype)
        same_bits(got, fp32.to(dtype))


@pytest.mark.parametrize("candidate", sorted(CANDIDATES))
def test_nan_propagates(device, candidate):
    """A NaN amax makes every output NaN; a NaN block scale its row (NUMERICS 2)."""
    a, b = operand(32, 64, seed=3), operand(16, 64, seed=4)
    a_nan_scale = a[1].clone()
    a_nan_scale.view(torch.uint8)[5, 2] = 0x7F
    got = run(candidate, (a[0], a_nan_scale, a[2]), b, device, out_dtype=torch.float32)
    assert torch.isnan(got[5]).all() and not torch.isnan(got[torch.arange(32) != 5]).any()
    got = run(candidate, a, (b[0], b[1], torch.tensor(float("nan"))), device)
    assert torch.isnan(got).all()


def test_dispatch_and_public_api(device):
    a = lowprec.quantize_nvfp4(torch.randn(2, 24, 64, device=device), backend="triton")
    b = lowprec.quantize_nvfp4(torch.randn(48, 64, device=device), backend="triton")
    got = lowprec.nvfp4_gemm(a, b, out_dtype=torch.float32, backend="triton").cpu()
    want = lowprec.nvfp4_gemm(a, b, out_dtype=torch.float32, backend="reference").cpu()
    assert got.shape == (2, 24, 48)
    ops = [t.cpu() for t in (a.data.reshape(48, 32), a.scale.reshape(48, 4), a.amax,
                             b.data, b.scale, b.amax)]
    got, want = got.reshape(48, 48), want.reshape(48, 48)
    assert ((got - want).abs() <= bound(ops[:3], ops[3:], 64) + want.abs() * 2**-23).all()
    default = nvfp4_gemm(*(t.to(device) for t in ops), out_dtype=torch.float32).cpu()
    assert torch.equal(default, got)
