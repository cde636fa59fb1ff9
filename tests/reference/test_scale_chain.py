"""The scale chain (NUMERICS 2): zero amax, zero and underflowing blocks, extreme magnitudes."""

import numpy as np
import pytest
import torch

import lowprec
from lowprec import reference as R

FLT_MAX = np.float32(np.finfo(np.float32).max)


def spec_scale_chain(block_amax, amax):
    """NUMERICS 2 transcribed with numpy FP32 scalars (IEEE single, one rounding each)."""
    with np.errstate(over="ignore", divide="ignore"):
        amax = np.float32(amax)
        s_enc = min(np.float32(2688) / amax, FLT_MAX)
        if amax == 0 or s_enc == 0:
            s_enc = np.float32(1)
        s_dec = np.float32(1) / s_enc
        product = np.float32(block_amax) * (s_enc * np.float32(1 / 6))
        s_b = torch.tensor(min(product, np.float32(448))).to(torch.float8_e4m3fn)
        enc_b = min(np.float32(1) / (np.float32(s_b.float().item()) * s_dec), FLT_MAX)
    return s_b.view(torch.uint8).item(), enc_b, s_dec


def test_amax_zero_gives_unit_global_scale_and_zero_everything():
    q = lowprec.quantize_nvfp4(torch.zeros(4, 32), backend="reference")
    assert q.amax.item() == 0.0
    assert R.global_encode_scale(q.amax).item() == 1.0
    assert not q.data.any() and not q.scale.view(torch.uint8).any()
    assert torch.equal(q.dequantize(), torch.zeros(4, 32))


def test_all_zero_block_inside_a_nonzero_tensor():
    x = torch.zeros(2, 48)
    x[0, :16] = torch.linspace(-3, 3, 16)
    x[1, 32:] = 5.0
    q = lowprec.quantize_nvfp4(x, backend="reference")
    scales = q.scale.view(torch.uint8)
    assert scales[0, 1] == 0 and scales[0, 2] == 0 and scales[1, 0] == 0
    deq = q.dequantize()
    assert torch.equal(deq[0, 16:], torch.zeros(32)) and torch.equal(deq[1, :32], torch.zeros(32))


def test_block_whose_scale_underflows_e4m3_dequantizes_to_exact_zero():
    x = torch.zeros(1, 32)
    x[0, 0] = 1.0e4                     # sets the global scale
    x[0, 16:] = 1.0e-6                  # block amax * S_enc / 6 < 2^-10: scale byte 0
    s_b, enc_b, _ = spec_scale_chain(1.0e-6, 1.0e4)
    assert s_b == 0 and enc_b == FLT_MAX
    q = lowprec.quantize_nvfp4(x, backend="reference")
    assert q.scale.view(torch.uint8)[0, 1].item() == 0
    # enc_b = FLT_MAX saturates the codes, yet the block dequantizes to exactly 0.
    assert (q.codes()[0, 16:] == 7).all()
    assert torch.equal(q.dequantize()[0, 16:], torch.zeros(16))


def near_e4m3_ties(amax):
    """FP32 block amaxes whose scaled value lands within a few ulps of an E4M3 tie."""
    s_enc = np.float32(2688) / np.float32(amax)
    out = []
    for tie in (1.0625, 1.1875, 3.25, 13.0, 26.0, 104.0, 208.0, 416.0):
        base = np.array([np.float32(tie) * np.float32(6) / s_enc], dtype=np.float32)
        bits = base.view(np.int32)[0]
        out += [np.array([bits + d], dtype=np.int32).view(np.float32)[0] for d in range(-8, 9)]
    return np.array(out, dtype=np.float32)


def check_scale_order(amax):
    """The reference's scales near E4M3 ties follow the spec's order; returns whether
    the other order, (block_amax / 6) * S_enc, would have given different bytes."""
    s_enc = np.float32(2688) / np.float32(amax)
    block_amaxes = near_e4m3_ties(amax)
    want = [spec_scale_chain(b, amax)[0] for b in block_amaxes]
    other = [torch.tensor(min((np.float32(b) / np.float32(6)) * s_enc, np.float32(448)))
             .to(torch.float8_e4m3fn).view(torch.uint8).item() for b in block_amaxes]
    got = R.block_scales(torch.from_numpy(block_amaxes), R.global_encode_scale(torch.tensor(amax)))
    assert got.view(torch.uint8).tolist() == want
    return want != other


def test_scale_product_order_matters_and_we_follow_the_spec():
    """block_amax * (S_enc * (1/6)) and (block_amax / 6) * S_enc round to different E4M3
    scales near ties; the reference must take the spec's order."""
    differs = [check_scale_order(amax) for amax in (3.0, 5.0, 7.3, 100.0, 0.37)]
    assert any(differs), "the cases must be able to tell the two orders apart"


@pytest.mark.parametrize("magnitude", [1e30, 3e38, 1e-30, 1e-38, 1e-44])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_magnitudes(magnitude, dtype):
    torch.manual_seed(1)
    x = (torch.randn(4, 64).clamp(-1.1, 1.1) * magnitude).to(dtype)
    if dtype == torch.bfloat16 and magnitude < 1e-38:
        pytest.skip(f"{magnitude} is below bfloat16's range in a randn tensor")
    q = lowprec.quantize_nvfp4(x, backend="reference")
    assert torch.isfinite(q.amax)
    amax = x.float().abs().max()
    assert q.amax.item() == amax.item()
    blocks = x.float().abs().reshape(4, 4, 16).amax(-1)
    for r in range(4):
        for b in range(4):
            s_b, enc_b, s_dec = spec_scale_chain(blocks[r, b].item(), amax.item())
            assert q.scale.view(torch.uint8)[r, b].item() == s_b
    deq = q.dequantize()
    assert torch.isfinite(deq).all()
    if magnitude < 1e-35:
        # amax < 2688 / FLT_MAX: S_enc saturates at FLT_MAX and S_dec is subnormal, so the
        # dequantized values lose precision by design; the scales above are the contract.
        return
    # Per element, the error is at most half an E2M1 step of the block (plus FP32 rounding),
    # unless the block's scale underflowed, which dequantizes to 0.
    err = (deq - x.float()).abs()
    step = q.scale.float().repeat_interleave(16, -1) * R.global_decode_scale(q.amax) * 2
    ok = (err <= step * 0.5 * (1 + 2 ** -20)) | (deq == 0)
    assert ok.all()


def test_non_finite_input_makes_every_scale_nan():
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(2, 32)
        x[1, 5] = bad
        q = lowprec.quantize_nvfp4(x, backend="reference")
        assert torch.isnan(q.amax)
        assert (q.scale.view(torch.uint8) == 0x7F).all()
        assert torch.isnan(q.dequantize()).all()


def test_given_amax_is_used_and_a_non_finite_block_is_nan():
    x = torch.randn(2, 32)
    q = lowprec.quantize_nvfp4(x, amax=100.0, backend="reference")
    assert q.amax.item() == 100.0
    x[0, 0] = float("nan")
    q = lowprec.quantize_nvfp4(x, amax=100.0, backend="reference")
    assert q.scale.view(torch.uint8)[0, 0].item() == 0x7F
    assert torch.isnan(q.dequantize()[0, :16]).all()
    assert torch.isfinite(q.dequantize()[0, 16:]).all()
