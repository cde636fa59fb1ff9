"""nvfp4_math.h element by element against the reference: Philox, E4M3, E2M1 (RNE, SR)
and the RHT, each over exhaustive or dense sets of inputs (the CPU build of the header;
the CUDA kernels compile the same functions)."""

import struct

import pytest
import torch

from csrc_helpers import assert_bits_equal

from lowprec import checks
from lowprec import reference as R
from lowprec.backends import extension

OPS = torch.ops.lowprec_C

PHILOX_KNOWN = [  # NUMERICS 4.1
    (0x0, 0x0, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (0x1, 0x0, (0xE3E80670, 0xE50A0EBC, 0x95F222C0, 0xB615AA27)),
    (0x0, 0x1, (0xF8E4CCA4, 0x5CB200DB, 0xB1A574EB, 0x097EFF67)),
    (0xDEADBEEFCAFEF00D, 0x100000007, (0xE8825000, 0x09AE01FE, 0x4D8E57DD, 0xC70AFEA5)),
]


@pytest.mark.parametrize("seed,counter,words", PHILOX_KNOWN)
def test_philox_known_answers(seed, counter, words):
    got = OPS.philox(checks.as_int64(seed), torch.tensor([checks.as_int64(counter)]))
    assert tuple(got[0].tolist()) == words


def test_philox_equals_reference_on_random_keys_and_counters():
    g = torch.Generator().manual_seed(0)
    counters = torch.randint(-2 ** 63, 2 ** 63 - 1, (4096,), generator=g)
    counters[:4] = torch.tensor([0, -1, 2 ** 32 - 1, 2 ** 32])
    unsigned = counters.tolist()
    lo = torch.tensor([c & 0xFFFFFFFF for c in unsigned])
    hi = torch.tensor([(c >> 32) & 0xFFFFFFFF for c in unsigned])
    for seed in (0, 1, 0xDEADBEEFCAFEF00D, 2 ** 64 - 1, 2 ** 32 + 17):
        got = OPS.philox(checks.as_int64(seed), counters)
        assert torch.equal(got, R.philox4x32_10(seed, lo, hi)), hex(seed)


def _e4m3_probe_values():
    """Every bf16 bit pattern, the neighbourhood of every E4M3 value and midpoint, and
    random FP32 patterns (all as FP32)."""
    bf16 = torch.arange(0, 1 << 16, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    values = [bf16.float()]
    e4m3 = torch.arange(0, 256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn)
    points = e4m3.float()
    points = points[torch.isfinite(points)].unique()
    mids = (points[1:] + points[:-1]) / 2
    anchors = torch.cat([points, mids, torch.tensor([448.0, 464.0, 480.0, 2.0 ** -10])])
    bits = anchors.view(torch.int32)
    for delta in range(-3, 4):
        for sign in (1.0, -1.0):
            values.append((bits + delta).view(torch.float32) * sign)
    g = torch.Generator().manual_seed(1)
    values.append(torch.randint(-2 ** 31, 2 ** 31 - 1, (1 << 18,), generator=g,
                                dtype=torch.int64).to(torch.int32).view(torch.float32))
    return torch.cat(values)


def test_e4m3_rounding_equals_reference():
    v = _e4m3_probe_values()
    assert_bits_equal(OPS.e4m3_round(v), R.e4m3_round(v), "e4m3")


def test_e2m1_rne_equals_reference_on_all_fp16_and_random_fp32():
    fp16 = torch.arange(0, 1 << 16, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    g = torch.Generator().manual_seed(2)
    rand = torch.randint(-2 ** 31, 2 ** 31 - 1, (1 << 18,), generator=g,
                         dtype=torch.int64).to(torch.int32).view(torch.float32)
    v = torch.cat([fp16, rand])
    assert_bits_equal(OPS.e2m1_round(v, None), R.e2m1_round_rne(v), "e2m1 rne")


def test_e2m1_sr_equals_reference():
    """Values on, between and beyond the grid, with words around each threshold."""
    g = torch.Generator().manual_seed(3)
    grid = torch.tensor(R.E2M1_GRID)
    between = torch.rand(4096, generator=g) * 7
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), 6.0, 6.5, -0.0, 1e-30])
    v = torch.cat([grid, -grid, between, -between, specials])
    v = v.repeat(8)
    words = torch.randint(0, 2 ** 32, (v.numel(),), generator=g)
    # Words whose top 24 bits sit right at p * 2^24 for some of the values.
    lo = R._e2m1_magnitude_floor(v.abs().clamp(max=6.0))
    grid7 = torch.tensor(R.E2M1_GRID + (6.0,))
    step = grid7[lo.long() + 1] - grid7[lo.long()]
    p = torch.where(step > 0, (v.abs().clamp(max=6.0) - grid7[lo.long()]) / step, 0.0)
    edge = (p.nan_to_num() * 2 ** 24).floor().long().clamp(0, 2 ** 24 - 1)
    pick = torch.rand(v.numel(), generator=g) < 0.5
    words = torch.where(pick, (edge << 8) | (words & 0xFF), words)
    assert_bits_equal(OPS.e2m1_round(v, words), R.e2m1_round_stochastic(v, words), "e2m1 sr")


def _rht_inputs():
    g = torch.Generator().manual_seed(4)
    cases = [torch.randn(64, 16, generator=g) * torch.exp(torch.randn(64, 16, generator=g) * 3)]
    zeros = torch.zeros(64, 16)
    signs = torch.randint(0, 2, (64, 16), generator=g).bool()
    cases.append(torch.where(signs, -zeros, zeros))                  # every sign pattern of zero
    cases.append(torch.full((4, 16), -0.0))
    pair = torch.randn(64, 8, generator=g)
    cases.append(torch.stack([pair, pair], -1).reshape(64, 16))      # x_2i == x_2i+1: cancellations
    cases.append(torch.stack([pair, -pair], -1).reshape(64, 16))
    cases.append(torch.ones(8, 16) * torch.tensor([1.0, -1.0]).repeat(8))
    tiny = torch.randint(-3, 4, (64, 16), generator=g).float() * 2.0 ** -149  # underflow x/4
    cases.append(tiny)
    cases.append(torch.randn(64, 16, generator=g) * 1e38)                     # overflow to Inf
    special = torch.randn(16, 16, generator=g)
    special[0, 3], special[1, 0], special[2, 5], special[2, 6] = float("nan"), float("inf"), float("inf"), -float("inf")
    cases.append(special)
    return torch.cat(cases)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("signs", [R.DEFAULT_SIGN_VECTOR, (1,) * 16, (-1,) * 16,
                                   (1, -1) * 8, (-1, 1, 1, -1) * 4])
def test_rht_equals_reference(dtype, signs):
    x = _rht_inputs().to(dtype)
    assert_bits_equal(OPS.rht(x, extension.sign_mask(signs)), R.rht(x, signs), f"rht {dtype}")


def test_rht_of_all_zero_chunks_for_every_sign_pattern():
    """The signed-zero rule of the butterfly (nvfp4_math.h): every 16-bit pattern of zero
    signs, under sign vectors that make some outputs the sum of sixteen -0 products."""
    patterns = torch.arange(1 << 16)
    negative = ((patterns[:, None] >> torch.arange(16)) & 1).bool()
    x = torch.where(negative, torch.tensor(-0.0), torch.tensor(0.0))
    for signs in (R.DEFAULT_SIGN_VECTOR, (1,) * 16, (-1,) * 16):
        assert_bits_equal(OPS.rht(x, extension.sign_mask(signs)), R.rht(x, signs), str(signs))


def _down_the_columns(chunks, cols=16):
    """x [16 * R, cols] whose column segments x[16r:16r+16, c] are the chunks (rows of
    ``chunks``, in order): the layout a columnwise copy's RHT reads."""
    n = chunks.shape[0] // cols * cols
    return chunks[:n].reshape(-1, cols, 16).transpose(1, 2).reshape(-1, cols)


@pytest.mark.parametrize("signs", [R.DEFAULT_SIGN_VECTOR, (1,) * 16, (-1,) * 16])
def test_columnwise_rht_equals_reference(signs):
    """The columnwise copy's RHT (rht16_to_bf16_columns: down a tile's 16 columns at once)
    on the chunks above and on every sign pattern of zero, through quantize_row_col's
    codes, whose sign nibbles show a zero's sign. Mutation: the all-zero case's sign
    taken as +0 (fails)."""
    patterns = torch.arange(1 << 16)
    negative = ((patterns[:, None] >> torch.arange(16)) & 1).bool()
    zeros = torch.where(negative, torch.tensor(-0.0), torch.tensor(0.0))
    for chunks in (_rht_inputs(), zeros):
        x = _down_the_columns(chunks)
        _, col = extension.quantize_row_col(x, rht_signs=signs, rowwise=False, columnwise=True)
        expected = R.quantize_nvfp4(x.T.contiguous(), rht_signs=signs)
        assert_bits_equal(col, expected, f"columnwise RHT {signs}")


def test_one_sixth_constant_is_the_references():
    assert struct.unpack("<I", struct.pack("<f", 1.0 / 6.0))[0] == 0x3E2AAAAB
