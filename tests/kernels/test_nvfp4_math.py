"""The element helpers of kernels/nvfp4_math.py against torch and the reference, densely."""

import pytest
import torch
import triton
import triton.language as tl

from lowprec import reference as R
from lowprec.kernels import nvfp4_math as nm

BLOCK = 4096


@triton.jit
def _unary_kernel(in_ptr, out_ptr, out2_ptr, n, OP: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    if OP == "widen_bf16":
        tl.store(out_ptr + i, nm.load_f32(in_ptr + i, mask, 1), mask=mask)
    elif OP == "widen_f16":
        tl.store(out_ptr + i, nm.load_f32(in_ptr + i, mask, 2), mask=mask)
    else:
        v = tl.load(in_ptr + i, mask=mask, other=0.0)
        if OP == "bf16":
            tl.store(out_ptr + i, nm.bf16_bits(v).to(tl.int16), mask=mask)
        elif OP == "e4m3":
            value, byte = nm.e4m3_rne(v)
            tl.store(out_ptr + i, value, mask=mask)
            tl.store(out2_ptr + i, byte.to(tl.uint8), mask=mask)
        elif OP == "e2m1":
            tl.store(out_ptr + i, nm.e2m1_rne(v), mask=mask)
        elif OP == "scales":
            amax = nm.canonical_amax(v)
            factor, s_dec = nm.encode_constants(amax)
            tl.store(out_ptr + i, factor, mask=mask)
            tl.store(out2_ptr + i, s_dec, mask=mask)


def run(op, x, out_dtype, out2_dtype=torch.uint8):
    n = x.numel()
    out = torch.empty(n, dtype=out_dtype, device=x.device)
    out2 = torch.empty(n, dtype=out2_dtype, device=x.device)
    _unary_kernel[(triton.cdiv(n, BLOCK),)](x, out, out2, n, OP=op, BLOCK=BLOCK)
    return out.cpu(), out2.cpu()


def all_16_bit_patterns(device):
    return torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).to(device)


@pytest.mark.parametrize("name,dtype", [("widen_bf16", torch.bfloat16),
                                        ("widen_f16", torch.float16)])
def test_widening_is_exact(device, same_bits, name, dtype):
    bits = all_16_bit_patterns(device)
    got, _ = run(name, bits, torch.float32)
    want = bits.cpu().view(dtype).float()
    nan = torch.isnan(want)
    same_bits(got[~nan], want[~nan])                      # subnormals included
    assert torch.isnan(got[nan]).all()
    assert torch.equal(torch.signbit(got[nan]), torch.signbit(want[nan]))


def random_floats(n, seed, exponents=(0, 255)):
    """fp32 values with random mantissas, signs and biased exponents in ``exponents``."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2**23, (n,), generator=g)
    bits |= torch.randint(*exponents, (n,), generator=g) << 23
    bits |= torch.randint(0, 2, (n,), generator=g) << 31
    return (bits - (bits >= 2**31) * 2**32).to(torch.int32).view(torch.float32)


def test_bf16_rounding(device, same_bits):
    x = random_floats(1 << 16, seed=1)
    ties = (torch.randint(0, 2**15, (4096,)) << 16 | 0x8000).to(torch.int32).view(torch.float32)
    x = torch.cat([x, ties, torch.tensor([3.4028235e38, -3.4028235e38, 1e-45, 0.0, -0.0])])
    got, _ = run("bf16", x.to(device), torch.int16)
    want = x.bfloat16()
    finite = ~torch.isnan(x)
    same_bits(got[finite], want[finite].view(torch.int16))


def test_e4m3_rounding(device, same_bits):
    """All magnitudes up to 448 in a dense sample, every tie, and all 256 codes."""
    x = random_floats(1 << 16, seed=2, exponents=(100, 136)).abs()
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).float()
    grid = codes[torch.isfinite(codes)].abs().unique()
    ties = (grid[1:] + grid[:-1]) / 2
    x = torch.cat([x.clamp(max=448.0), grid, ties, -ties, torch.tensor([float("nan")])])
    got_value, got_byte = run("e4m3", x.to(device), torch.float32)
    want = R.e4m3_round(x)
    same_bits(got_byte, want.view(torch.uint8))
    finite = ~torch.isnan(x)
    same_bits(got_value[finite], want.float()[finite])


def test_e4m3_decoding(device, same_bits):
    @triton.jit
    def decode(in_ptr, out_ptr):
        i = tl.arange(0, 256)
        tl.store(out_ptr + i, nm.e4m3_byte_to_f32(tl.load(in_ptr + i)))

    byte = torch.arange(256, dtype=torch.int32, device=device)
    out = torch.empty(256, device=device)
    decode[(1,)](byte, out)
    want = byte.cpu().to(torch.uint8).view(torch.float8_e4m3fn).float()
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(out.cpu()), nan)
    same_bits(out.cpu()[~nan], want[~nan])


def test_e2m1_rne(device, same_bits):
    mids = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0, 0.5, 1, 1.5, 2, 3, 4, 6,
                         7, 8, 1e30, 3.4e38, float("inf"), 1e-45])
    near = torch.cat([mids, torch.nextafter(mids, torch.tensor(float("inf"))),
                      torch.nextafter(mids, torch.tensor(0.0))])
    x = torch.cat([random_floats(1 << 17, seed=3, exponents=(118, 131)).abs(), near])
    got, _ = run("e2m1", x.to(device), torch.int32)
    same_bits(got, R.e2m1_magnitude_rne(x).to(torch.int32))


@triton.jit
def _sr_kernel(v_ptr, w_ptr, out_ptr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    words = tl.load(w_ptr + i).to(tl.uint32, bitcast=True)
    tl.store(out_ptr + i, nm.e2m1_stochastic(tl.load(v_ptr + i), words))


@pytest.mark.parametrize("words", ["random", "zero", "max", "at threshold"])
def test_e2m1_stochastic(device, same_bits, words):
    x = random_floats(1 << 16, seed=4, exponents=(118, 131)).abs()
    x = torch.cat([x, torch.tensor([0.0, 0.5, 6.0, 7.0, 1e30, float("inf")] * 16)])
    n = x.numel() + (-x.numel() % BLOCK)
    x = torch.cat([x, torch.zeros(n - x.numel())])
    if words == "random":
        w = torch.randint(0, 2**32, (n,), generator=torch.Generator().manual_seed(5))
    elif words == "zero":
        w = torch.zeros(n, dtype=torch.int64)
    elif words == "max":
        w = torch.full((n,), 2**32 - 1)
    else:                               # draw == threshold exactly: must round down
        a = x.clamp(max=6.0)
        lo = R.e2m1_values(R._e2m1_magnitude_floor(a))
        hi_minus_lo = torch.where(a >= 4, 2.0, torch.where(a >= 2, 1.0, 0.5))
        w = (((a - lo) / hi_minus_lo * 2**24).floor().to(torch.int64) << 8)
    out = torch.empty(n, dtype=torch.int32, device=device)
    _sr_kernel[(n // BLOCK,)](x.to(device), w.to(torch.int32).to(device), out, BLOCK=BLOCK)
    same_bits(out, (R.e2m1_round_stochastic(x, w) & 7).to(torch.int32))


def test_global_scales(device, same_bits):
    amax = torch.tensor([0.0, -0.0, 1e-45, 1e-38, 1e-30, 1.0, 6.0, 2688.0, 1e30, 3.4028235e38,
                         float("inf"), float("nan"), -2.0])
    got_factor, got_dec = run("scales", amax.to(device), torch.float32, torch.float32)
    canonical = torch.where(torch.isfinite(amax), amax, torch.tensor(float("nan")))
    s_enc = R.global_encode_scale(canonical)
    want_factor = s_enc * torch.tensor(1.0 / 6.0, dtype=torch.float32)
    nan = torch.isnan(canonical)
    same_bits(got_factor[~nan], want_factor[~nan])
    same_bits(got_dec[~nan], R.global_decode_scale(canonical)[~nan])
    assert torch.isnan(got_factor[nan]).all() and torch.isnan(got_dec[nan]).all()


# Not specialized: Triton turns an int argument equal to 1 into a constant, which has no
# ``.to`` (seen compiling for an H200, counter 1); the quantize kernels do the same.
@triton.jit(do_not_specialize=["seed", "offset"])
def _philox_kernel(out_ptr, seed, offset):
    i = tl.arange(0, 4)
    words = nm.philox_words(seed, offset.to(tl.uint64) + i.to(tl.uint64))   # [4, 2, 2]
    tl.store(out_ptr + tl.arange(0, 16), tl.reshape(words, [16]).to(tl.int32, bitcast=True))


@pytest.mark.parametrize("seed,counter,words", [
    (0x0, 0x0, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (0x1, 0x0, (0xE3E80670, 0xE50A0EBC, 0x95F222C0, 0xB615AA27)),
    (0x0, 0x1, (0xF8E4CCA4, 0x5CB200DB, 0xB1A574EB, 0x097EFF67)),
    (0xDEADBEEFCAFEF00D, 0x100000007, (0xE8825000, 0x09AE01FE, 0x4D8E57DD, 0xC70AFEA5)),
])
def test_philox_known_answers(device, seed, counter, words):
    """NUMERICS 4.1's table; the following counters (with 64-bit wrap) match the reference."""
    out = torch.empty(16, dtype=torch.int32, device=device)
    _philox_kernel[(1,)](out, seed, counter)
    got = out.cpu().to(torch.int64) & 0xFFFFFFFF
    assert tuple(got[:4].tolist()) == words
    assert torch.equal(got, R.random_words(seed, counter, 16))


def test_philox_counter_wraps(device):
    out = torch.empty(16, dtype=torch.int32, device=device)
    _philox_kernel[(1,)](out, 2**64 - 1, 2**64 - 2)
    assert torch.equal(out.cpu().to(torch.int64) & 0xFFFFFFFF,
                       R.random_words(2**64 - 1, 2**64 - 2, 16))
