"""One NaN per dtype, on every backend that runs here, and the RHT's zero and NaN signs.

Canonical NaN (NUMERICS, "Non-finite input"): every NaN that ``dequantize_nvfp4`` or
``quantize_fp8`` produces is the positive quiet NaN of its dtype, whatever NaN (sign,
payload) caused it. The expected bit patterns are written out here, not taken from
``lowprec.reference``.

Mutants these tests kill (each re-run once by hand):
* reference.canonicalize_nan returning ``t`` unchanged: the reference keeps the sign of
  ``-nan`` inputs (fp32 0xFFC00000) -> test_dequantize_nan_is_canonical fails.
* csrc e4m3_rne_bits returning ``sign | 0x7F`` for NaN (the old code): cpu fp8 data of a
  ``-nan`` gives 0xFF -> test_fp8_nan_is_canonical[cpu] fails.
* kernels/nvfp4_math.store_cast storing ``v.to(tl.float16)`` (no pin): fine in the
  interpreter (numpy writes 0x7E00) but 0x7FFF on a GPU -> the fp16 case under -m gpu.
* kernels/nvfp4_math.rht_rows without rht_zero_signs: ``-torch.zeros(1, 16)`` gives
  Triton byte 8 where the reference has 0 -> test_rht_zero_signs fails.
* kernels/nvfp4_math.to_bf16 without the 0xFFFF pin -> test_rht_nan_sign fails.
"""

import pytest
import torch

import lowprec
from lowprec import reference as R

from .conftest import DEVICE

NAN_BITS = {torch.float32: 0x7FC00000, torch.bfloat16: 0x7FC0, torch.float16: 0x7E00}
INT_VIEW = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}
BACKENDS = [b for b in ("reference", "cpu", "triton") if lowprec.available(b, device_type="cpu")
            or (b == "triton" and lowprec.available(b))]


def device_of(backend):
    return DEVICE if backend == "triton" else "cpu"


def nan_inputs():
    """NaNs of both signs and with payloads, and Infs that make NaN through Inf/Inf."""
    neg_nan = torch.tensor(0xFFC00000 - 2**32, dtype=torch.int32).view(torch.float32)
    payload = torch.tensor(0x7F800001, dtype=torch.int32).view(torch.float32)   # signalling
    neg_payload = torch.tensor(0xFFA00005 - 2**32, dtype=torch.int32).view(torch.float32)
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    x[0, 0] = neg_nan
    x[1, 5] = payload
    x[2, 17] = neg_payload
    x[3, :] = float("inf")                   # row amax Inf: Inf/Inf = NaN in FP8
    x[4, 3] = -float("inf")
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dequantize_nan_is_canonical(backend, dtype):
    x = nan_inputs()
    q = lowprec.quantize_nvfp4(x.to(device_of(backend)), backend=backend)
    out = lowprec.dequantize_nvfp4(q, dtype, backend=backend).cpu()
    nan = torch.isnan(out)
    assert nan.all()                          # non-finite input: every value is NaN
    assert (out.view(INT_VIEW[dtype])[nan] == torch.tensor(NAN_BITS[dtype]).to(
        INT_VIEW[dtype])).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp8_nan_is_canonical(backend):
    x = nan_inputs()
    f = lowprec.quantize_fp8(x.to(device_of(backend)), backend=backend)
    data = f.data.cpu().view(torch.uint8)
    scale = f.scale.cpu().view(torch.int32).flatten()
    is_nan = torch.isnan(f.data.cpu().float())
    assert is_nan[0:3].any(-1).all() and is_nan[3].all()   # rows 0-2 NaN; Inf/Inf row
    assert (data[is_nan] == 0x7F).all()
    assert scale[:3].tolist() == [0x7FC00000] * 3           # NaN row amax -> scale NaN
    assert scale[3].item() == 0x7F800000 and scale[4].item() == 0x7F800000   # Inf stays Inf


def zero_chunks_with_every_negative_output():
    """16 rows of +-0: row k is signed so that RHT output k is -0 under the default signs
    (product j = x_j * s_j * H[j][k] / 4 must be -0 for every j), plus rows of +0, -0."""
    h = R.hadamard_matrix() < 0                      # H[j][k] < 0
    s = torch.tensor(R.DEFAULT_SIGN_VECTOR) < 0
    rows = []
    for k in range(16):
        negative_x = ~(h[:, k] ^ s)                  # sign(x_j) xor s_j<0 xor H_jk<0 = 1
        rows.append(torch.where(negative_x, -0.0, 0.0))
    rows += [torch.zeros(16), -torch.zeros(16)]
    return torch.stack(rows)


def test_rht_zero_signs():
    """Reference codes: row k has -0 (code 8) at output k only; Triton must agree."""
    x = zero_chunks_with_every_negative_output()
    want = lowprec.quantize_nvfp4(x, rht=True, backend="reference")
    codes = R.unpack_codes(want.data)
    assert torch.equal(codes[:16], torch.eye(16, dtype=torch.uint8) * 8)
    assert not codes[16:].any()                      # -torch.zeros(1, 16): byte 0
    if "triton" not in BACKENDS:
        pytest.skip("triton not available")
    got = lowprec.quantize_nvfp4(x.to(DEVICE), rht=True, backend="triton")
    assert torch.equal(got.data.cpu(), want.data)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):                               # random zero signs, both sign vectors
        signs = tuple((torch.randint(0, 2, (16,), generator=g) * 2 - 1).tolist())
        z = torch.where(torch.rand(64, 32, generator=g) < 0.5, -0.0, 0.0)
        want = lowprec.quantize_nvfp4(z, rht=True, sign_vector=signs, backend="reference")
        got = lowprec.quantize_nvfp4(z.to(DEVICE), rht=True, sign_vector=signs,
                                     backend="triton")
        assert torch.equal(got.data.cpu(), want.data)


def test_rht_nan_sign():
    """A NaN made inside the RHT (Inf - Inf) and one carried through it are bf16 0xFFFF in
    the reference, so their codes carry sign bit 8; every backend must agree."""
    x = torch.ones(2, 32)
    x[0, 0], x[0, 1] = float("inf"), float("inf")    # outputs mix +Inf and -Inf: NaN
    x[1, 16] = float("nan")
    want = lowprec.quantize_nvfp4(x, rht=True, backend="reference")
    assert (R.unpack_codes(want.data)[:, :16] & 8).any()   # the pinned NaN sign shows
    for backend in BACKENDS:
        got = lowprec.quantize_nvfp4(x.to(device_of(backend)), rht=True, backend=backend)
        assert torch.equal(got.data.cpu(), want.data), backend
