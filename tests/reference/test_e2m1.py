"""E2M1 rounding (NUMERICS 1, 3): codes, midpoints and their FP32 neighbours, saturation, sign."""

import math

import pytest
import torch

from lowprec import reference as R

GRID = R.E2M1_GRID


def f32(values):
    return torch.tensor(values, dtype=torch.float32)


def next_up(v):
    return math.nextafter(float(torch.tensor(v, dtype=torch.float32)), math.inf)


def test_every_code_round_trips():
    codes = torch.arange(16, dtype=torch.uint8)
    values = R.e2m1_values(codes)
    assert values[:8].tolist() == list(GRID)
    assert values[8:].tolist() == [-g for g in GRID]
    # -0.0 keeps its sign: code 8 decodes to -0 and encodes back to 8.
    assert torch.equal(R.e2m1_round_rne(values), codes)


# (midpoint, code it rounds to): ties go to the even code, alternating down/up.
MIDPOINTS = [(0.25, 0), (0.75, 2), (1.25, 2), (1.75, 4), (2.5, 4), (3.5, 6), (5.0, 6)]


@pytest.mark.parametrize("mid,code", MIDPOINTS)
def test_midpoints_and_their_fp32_neighbours(mid, code):
    below = math.nextafter(mid, 0.0)
    above = math.nextafter(mid, math.inf)
    # f32 nextafter: float32 has fewer bits, so step in float32 explicitly.
    below32 = torch.tensor(mid, dtype=torch.float32).view(torch.int32) - 1
    above32 = torch.tensor(mid, dtype=torch.float32).view(torch.int32) + 1
    v = torch.stack((below32, above32)).view(torch.float32)
    assert below < mid < above
    got = R.e2m1_round_rne(torch.cat((f32([mid]), v)))
    lower_code = [c for c in range(8) if GRID[c] < mid][-1]
    assert got.tolist() == [code, lower_code, lower_code + 1]
    neg = R.e2m1_round_rne(-torch.cat((f32([mid]), v)))
    assert neg.tolist() == [code | 8, lower_code | 8, (lower_code + 1) | 8]


def test_saturation_at_six():
    v = f32([6.0, next_up(6.0), 7.0, 1e30, float("inf"), -6.5, -float("inf")])
    assert R.e2m1_round_rne(v).tolist() == [7, 7, 7, 7, 7, 15, 15]
    words = torch.zeros(v.shape, dtype=torch.int64)
    assert R.e2m1_round_stochastic(v, words).tolist() == [7, 7, 7, 7, 7, 15, 15]
    words_max = torch.full(v.shape, 0xFFFFFFFF, dtype=torch.int64)
    assert R.e2m1_round_stochastic(v, words_max).tolist() == [7, 7, 7, 7, 7, 15, 15]


def test_signed_zero_and_small_negatives():
    v = f32([0.0, -0.0, -0.1, 0.1, -0.25, 0.25])
    assert R.e2m1_round_rne(v).tolist() == [0, 8, 8, 0, 8, 0]


def test_nan_gives_magnitude_zero_with_its_sign_source():
    v = f32([float("nan"), float("nan")])
    sign = f32([1.0, -1.0])
    assert R.e2m1_round_rne(v, sign_source=sign).tolist() == [0, 8]


def test_rne_is_nearest_on_a_dense_sweep():
    """Away from ties, RNE picks the grid value nearest to v (checked against FP64)."""
    v = torch.linspace(-7, 7, 20001, dtype=torch.float32)
    codes = R.e2m1_round_rne(v)
    got = R.e2m1_values(codes).double()
    grid = torch.tensor(GRID, dtype=torch.float64)
    a = v.double().abs().clamp(max=6)
    dist = (a[:, None] - grid[None, :]).abs()
    nearest = grid[dist.argmin(dim=1)]
    is_tie = (dist.sort(dim=1).values[:, :2].diff(dim=1).squeeze(1) == 0)
    assert torch.equal(got.abs()[~is_tie], nearest[~is_tie])
    assert torch.equal(torch.signbit(got), torch.signbit(v))
