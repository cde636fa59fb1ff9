"""E4M3 rounding (NUMERICS 1, 2): all 256 bytes, the clamp before the cast, RNE at ties."""

import torch

from lowprec import reference as R


def decode_e4m3(byte):
    """Value of an E4M3 (fn) byte from its bits: an implementation independent of torch."""
    sign = -1.0 if byte & 0x80 else 1.0
    exponent = (byte >> 3) & 0xF
    mantissa = byte & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return float("nan")
    if exponent == 0:
        return sign * mantissa / 8 * 2.0 ** -6
    return sign * (1 + mantissa / 8) * 2.0 ** (exponent - 7)


def test_all_256_bytes_decode_and_round_trip():
    raw = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    values = raw.view(torch.float8_e4m3fn).to(torch.float32)
    for byte in range(256):
        expected = decode_e4m3(byte)
        got = values[byte].item()
        if expected != expected:
            assert got != got, f"byte {byte:#x} should be NaN"
        else:
            assert got == expected, f"byte {byte:#x}: {got} != {expected}"
    finite = ~torch.isnan(values)
    encoded = R.e4m3_round(values[finite]).view(torch.uint8)
    assert torch.equal(encoded, raw[finite])
    assert torch.isnan(R.e4m3_round(values[~finite]).to(torch.float32)).all()


def test_clamp_before_the_cast():
    """|v| > 448 and Inf saturate to 0x7E / 0xFE, NaN stays NaN.

    Which torch versions this protects: torch 2.11 (lowprec's oldest supported) casts
    |v| >= 480 and Inf to NaN 0x7F, so there removing the clamp in reference.e4m3_round
    fails this test; torch >= 2.12 saturates in the cast itself (pytorch/pytorch#178817),
    so on the torch 2.13 of CI that mutant survives and the clamp is belt and braces.
    """
    v = torch.tensor([448.0, 449.0, 464.0, 480.0, 1000.0, 1e30, float("inf")])
    assert R.e4m3_round(v).view(torch.uint8).tolist() == [0x7E] * 7
    assert R.e4m3_round(-v).view(torch.uint8).tolist() == [0xFE] * 7
    # NaN is not clamped away.
    assert torch.isnan(R.e4m3_round(torch.tensor([float("nan")])).to(torch.float32)).all()


def test_round_to_nearest_even_at_every_tie():
    values = [decode_e4m3(b) for b in range(0x7F)]          # all finite positives, ascending
    for lo_byte in range(0x7E):
        lo, hi = values[lo_byte], values[lo_byte + 1]
        mid = torch.tensor([(lo + hi) / 2], dtype=torch.float64).to(torch.float32)
        assert mid.double().item() == (lo + hi) / 2           # the tie is exact in FP32
        even = lo_byte if lo_byte % 2 == 0 else lo_byte + 1
        assert R.e4m3_round(mid).view(torch.uint8).item() == even, (lo, hi)
        below = (mid.view(torch.int32) - 1).view(torch.float32)
        above = (mid.view(torch.int32) + 1).view(torch.float32)
        assert R.e4m3_round(below).view(torch.uint8).item() == lo_byte
        assert R.e4m3_round(above).view(torch.uint8).item() == lo_byte + 1


def test_underflow_to_zero_below_half_the_smallest_subnormal():
    smallest = 2.0 ** -9
    v = torch.tensor([smallest / 2, smallest / 2 * 1.0001, smallest * 0.75, 1e-30])
    assert R.e4m3_round(v).view(torch.uint8).tolist() == [0, 1, 1, 0]
