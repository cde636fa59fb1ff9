"""Stochastic rounding (NUMERICS 4): grid values fixed, two neighbours, unbiased, 50/50 ties.

Statistical bounds: each draw rounds up with probability P = ceil(p * 2^24) / 2^24, which
is within 2^-24 of p. Over N independent draws the mean of the rounded value has standard
deviation sigma = (hi - lo) * sqrt(P (1 - P) / N); we allow 6 sigma plus the 2^-24 bias.
For uniformly distributed Philox words a correct implementation fails with probability
about 2e-9; the seed is fixed, so the outcome is deterministic.
"""

import math

import pytest
import torch

import lowprec
from lowprec import reference as R

GRID = R.E2M1_GRID
N = 1 << 20


def draws(value, seed=1, offset=0, n=N):
    v = torch.full((n,), value, dtype=torch.float32)
    return R.e2m1_round_stochastic(v, R.random_words(seed, offset, n))


def test_grid_values_never_move():
    grid = torch.tensor(GRID + tuple(-g for g in GRID), dtype=torch.float32)
    for words in (torch.zeros(16, dtype=torch.int64),
                  torch.full((16,), 0xFFFFFFFF, dtype=torch.int64),
                  R.random_words(5, 0, 16)):
        assert torch.equal(R.e2m1_round_stochastic(grid, words), R.e2m1_round_rne(grid))


def test_grid_values_never_move_through_the_quantizer():
    torch.manual_seed(0)
    codes = torch.randint(0, 16, (64, 64), dtype=torch.uint8)
    codes[:, ::16] = 7                      # every block's amax is 6 and so is the tensor's
    x = R.e2m1_values(codes)
    assert R.block_encode_scales(R.block_scales(torch.tensor([6.0]), torch.tensor(448.0)),
                                 torch.tensor(448.0)).item() == 1.0   # enc_b == 1: v == x
    q = lowprec.quantize_nvfp4(x, stochastic=True, seed=123, offset=77, backend="reference")
    assert torch.equal(q.codes(), R.e2m1_round_rne(x))


@pytest.mark.parametrize("value", [0.1, 0.3, 0.6, 1.1, 1.7, 2.2, 2.9, 3.3, 5.9, -0.7, -4.5])
def test_result_is_a_neighbour_and_the_mean_is_unbiased(value):
    codes = draws(value)
    got = R.e2m1_values(codes).double()
    a = abs(value)
    lo = max(g for g in GRID if g <= a)
    hi = min(g for g in GRID if g > a)
    sign = math.copysign(1.0, value)
    assert set(got.unique().tolist()) <= {sign * lo, sign * hi}
    v32 = torch.tensor(value, dtype=torch.float32).double().item()
    p = (abs(v32) - lo) / (hi - lo)
    sigma = (hi - lo) * math.sqrt(p * (1 - p) / N)
    assert abs(got.mean().item() - v32) <= 6 * sigma + (hi - lo) * 2 ** -24


@pytest.mark.parametrize("mid", [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
def test_midpoints_split_near_half(mid):
    up = (R.e2m1_values(draws(mid, seed=9)) > mid).double().mean().item()
    assert abs(up - 0.5) <= 6 * math.sqrt(0.25 / N)


def test_the_threshold_rule_exactly():
    """Round up iff float(r >> 8) < p * 2^24; p = 0.25 at v = 1.125."""
    p_times = 0.25 * 2 ** 24
    words = torch.tensor([0, int(p_times - 1) << 8, int(p_times) << 8, 0xFFFFFFFF],
                         dtype=torch.int64)
    v = torch.full((4,), 1.125)
    assert R.e2m1_values(R.e2m1_round_stochastic(v, words)).tolist() == [1.5, 1.5, 1.0, 1.0]


def test_quantizer_mean_is_unbiased_in_value():
    """Dequantized SR results average to x within the statistical bound."""
    x = torch.full((N // 16, 16), 0.37)
    x[:, 0] = 6.0                         # enc_b == 1 (see above): v == x
    q = lowprec.quantize_nvfp4(x, stochastic=True, seed=42, backend="reference")
    deq = q.dequantize().double()[:, 1:]
    p = (0.37 - 0.0) / 0.5
    n = deq.numel()
    sigma = 0.5 * math.sqrt(p * (1 - p) / n)
    v32 = torch.tensor(0.37).double().item()
    assert abs(deq.mean().item() - v32) <= 6 * sigma + 0.5 * 2 ** -24


def test_different_offsets_and_seeds_give_different_draws():
    torch.manual_seed(3)
    x = torch.randn(32, 64)
    same = dict(stochastic=True, seed=1, offset=0, backend="reference")
    base = lowprec.quantize_nvfp4(x, **same).codes()
    again = lowprec.quantize_nvfp4(x, **same).codes()
    assert torch.equal(base, again)
    for other in (dict(seed=1, offset=R.counters_used(x.numel())), dict(seed=2, offset=0),
                  dict(seed=1, offset=2 ** 40)):
        codes = lowprec.quantize_nvfp4(x, stochastic=True, **other, backend="reference").codes()
        assert not torch.equal(codes, base), other
        # Both are neighbours of the same v, so they differ by at most one grid step.
        assert ((R.e2m1_values(codes) - R.e2m1_values(base)).abs() <= 2).all()
