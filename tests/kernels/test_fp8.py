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


@pytest.mark.parametrize("bias", [False, True])
def test_scaled_mm_path_adds_the_bias_in_fp32(monkeypatch, bias):
    """The tensor-core path (kernels.fp8._scaled_mm, run here through torch's CPU
    ``_scaled_mm``) never hands the bias to torch, whose row-wise GEMM adds it to an
    already rounded output; the bias is added to the FP32 product, then one rounding."""
    from lowprec.kernels import fp8 as fp8_kernels
    calls = []
    real = torch._scaled_mm

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", spy)
    g = torch.Generator().manual_seed(5)

    def integers(rows):
        # Integers in [-7, 7], each row's amax 7: scale 7/448 = 2^-6, codes x * 64, all
        # exact in E4M3; products below 2^18, sums of 64 below 2^24: the FP32 GEMM is exact
        # in any order, so the result is fixed bit for bit.
        x = torch.randint(-7, 8, (rows, 64), generator=g).float()
        x[:, 0] = 7.0
        return lowprec.quantize_fp8(x, backend="reference")

    a, b = integers(40), integers(24)
    c = torch.randn(24, generator=g).to(torch.bfloat16) * 8 if bias else None
    got = fp8_kernels._scaled_mm(a.data, a.scale, b.data, b.scale, c, torch.bfloat16)
    assert calls and all(call.get("bias") is None for call in calls)
    if bias:
        assert calls[0]["out_dtype"] == torch.float32
    want = R.fp8_gemm(a.data, a.scale, b.data, b.scale, bias=c, out_dtype=torch.bfloat16)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))


@pytest.mark.parametrize("out", ["f32", "bf16", "f16"])
@pytest.mark.parametrize("bias", [None, "f32", "bf16"])
def test_scale_epilogue_is_the_references_arithmetic(out, bias):
    """The one-launch epilogue after the tensor-wise FP8 GEMM: ``acc * scale_a * scale_b^T
    (+ bias)`` in FP32, rounded once, exactly as reference.fp8_gemm computes it from the
    same product; on a strided accumulator (the padded GEMM's slice), with zeros of both
    signs, NaN, Inf and values that round to ties in bf16/fp16."""
    from lowprec.kernels.fp8 import scale_epilogue
    g = torch.Generator().manual_seed(9)
    m, n = 37, 70
    wide = torch.randn(m, n + 10, generator=g) * torch.exp2(
        torch.randint(-30, 30, (m, n + 10), generator=g).float())
    wide[0, :6] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"),
                                1.0 + 2.0 ** -8])
    acc = wide[:, :n]                                     # row stride n + 10
    a_scale = torch.rand(m, 1, generator=g) * 2.0 ** -6
    b_scale = torch.rand(n, 1, generator=g) * 2.0 ** -6
    b_scale[3] = 0.0
    c = None if bias is None else (torch.randn(n, generator=g) * 4).to(DTYPES[bias])
    got = scale_epilogue(acc, a_scale, b_scale, c, DTYPES[out])
    want = acc * a_scale * b_scale.transpose(-1, -2)
    if c is not None:
        want = want + c.to(torch.float32)
    want = want.to(DTYPES[out])
    bits = {torch.float32: torch.int32}.get(want.dtype, torch.int16)
    nan = want != want
    assert torch.equal(got != got, nan)                  # NaN where the reference has one
    assert torch.equal(got.view(bits)[~nan], want.view(bits)[~nan])


def div_rn_probes():
    """Rows whose quotients x / scale sit within a few FP32 ulps of E4M3 ties.

    Each row holds 448 * s (so scale = s exactly, for s = 3, 5, 7, 1.75 * 2^-3) and values
    t * s nudged by -3..3 ulps for every E4M3 tie t from the subnormals up, so a division
    that is off by an ulp (an approximate reciprocal, ``div.full.f32``) lands on the other
    side of a tie for some of them, where ``tl.div_rn`` cannot.
    """
    finite = torch.arange(0x7F, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn)
    grid = finite.to(torch.float64)
    ties = ((grid[:-1] + grid[1:]) / 2)
    rows = []
    for s in (3.0, 5.0, 7.0, 1.75 / 8):
        centre = (ties * s).to(torch.float32)
        nudged = [(centre.view(torch.int32) + d).view(torch.float32) for d in range(-3, 4)]
        values = torch.cat(nudged)
        values = values[values.abs() <= 448 * s]
        row = torch.full((values.numel() + 1,), 448 * s)
        row[1:] = values
        rows.append(row)
    width = max(r.numel() for r in rows)
    return torch.stack([torch.cat([r, r.new_zeros(width - r.numel())]) for r in rows])


def test_div_rn_probes_discriminate():
    """The probes can fail: an approximate division, x * fp32(1 / scale), gives other bytes
    than the correctly rounded x / scale of the reference on many of them."""
    x = div_rn_probes()
    _, scale = R.quantize_fp8_rowwise(x)
    assert scale.flatten().tolist() == [3.0, 5.0, 7.0, 1.75 / 8]
    exact = R.e4m3_round(x / scale).view(torch.uint8)
    approx = R.e4m3_round(x * (1.0 / scale)).view(torch.uint8)
    assert (exact != approx).sum() >= 20


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_div_rn_on_the_gpu(same_bits):
    """``pytest -m gpu``: the compiled FP8 kernel divides with tl.div_rn. Mutant: plain
    ``x / scale`` in kernels/fp8.py compiles to an approximate division on the GPU and
    changes bytes of these probes (the interpreter's numpy division is correctly rounded,
    so only this GPU run can see it)."""
    x = div_rn_probes()
    data, scale = quantize_fp8(x.cuda())
    want_data, want_scale = R.quantize_fp8_rowwise(x)
    same_bits(scale, want_scale)
    same_bits(data, want_data)
