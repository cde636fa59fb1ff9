"""The fused 1x16 kernel (rowwise + RHT-columnwise) equals the reference bit for bit."""

import pytest
import torch

from lowprec import reference as R
import lowprec
from lowprec.kernels.backend import quantize_row_col

SIGNS = R.DEFAULT_SIGN_VECTOR
OTHER_SIGNS = (-1, 1, 1, 1, -1, -1, 1, -1, 1, 1, -1, -1, -1, 1, 1, -1)
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def pad_rows(x):
    """NUMERICS 10: zero rows up to a multiple of 16."""
    m = x.shape[0]
    return torch.cat([x, x.new_zeros(-m % 16, x.shape[1])]) if m % 16 else x


def reference_pair(x, signs, row_sr=False, col_sr=False, seed=0, row_offset=0,
                   col_offset=0, row_amax=None, col_amax=None):
    x = x.cpu()
    row = R.quantize_nvfp4(x, stochastic=row_sr, seed=seed, offset=row_offset, amax=row_amax)
    col = R.quantize_nvfp4(pad_rows(x).t(), rht_signs=signs, stochastic=col_sr, seed=seed,
                           offset=col_offset, amax=col_amax)
    return row, col


def sample(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-6, 7, shape, generator=g))
    return x.to(dtype)


CASES = [
    # (M, K, dtype, rht, row SR, col SR, seed, row offset, col offset)
    (64, 128, "f32", True, False, False, 0, 0, 0),
    (100, 256, "bf16", True, False, False, 0, 0, 0),          # M not a multiple of 16
    (33, 48, "f16", True, True, True, 7, 0, 1000),
    (128, 64, "bf16", False, False, False, 0, 0, 0),          # columnwise without RHT
    (200, 512, "f32", True, True, True, 2**64 - 1, 2**64 - 5, 2**40),   # 64-bit wrap
    (77, 320, "bf16", True, True, False, 0xDEADBEEFCAFEF00D, 2**32 - 3, 0),  # carry into hi
    (16, 16, "bf16", True, False, True, 1, 0, 2**63 + 11),
    (512, 512, "bf16", True, False, True, 123456789, 3, 2**33),
]


@pytest.mark.parametrize("m,k,dtype,rht,row_sr,col_sr,seed,row_off,col_off", CASES)
def test_matches_reference(device, same_triple, m, k, dtype, rht, row_sr, col_sr, seed,
                           row_off, col_off):
    x = sample((m, k), DTYPES[dtype], seed=m * k)
    signs = SIGNS if rht else None
    row, col = quantize_row_col(
        x.to(device), rht_signs=signs, row_stochastic=row_sr, col_stochastic=col_sr,
        seed=seed, row_offset=row_off, col_offset=col_off)
    want_row, want_col = reference_pair(x, signs, row_sr, col_sr, seed, row_off, col_off)
    same_triple(row, want_row)
    same_triple(col, want_col)
    m_pad = -(-m // 16) * 16
    assert col[0].shape == (k, m_pad // 2) and col[1].shape == (k, m_pad // 16)


NON_CONTIGUOUS = {
    "column slice": lambda b: b[:, 8:264],
    "transposed": lambda b: b.t().contiguous().t()[:50],
    "row stride 2": lambda b: b[::2, :320],
}


@pytest.mark.parametrize("view", sorted(NON_CONTIGUOUS))
def test_non_contiguous_input(device, same_triple, monkeypatch, view):
    """The kernel itself reads the strided view: the launcher is spied on to see the
    strides it gets (a backend that copied to contiguous first would hide a kernel that
    ignores strides; that mutant, ``view.stride(0), view.stride(1)`` replaced by ``k, 1``
    in quantize_row_col's launch, fails here)."""
    import lowprec.kernels.quantize_row_col as q1
    seen = []
    launch = q1.quantize_row_col

    def spy(x, **kwargs):
        seen.append(x.stride())
        return launch(x, **kwargs)
    monkeypatch.setattr(q1, "quantize_row_col", spy)
    make = NON_CONTIGUOUS[view]
    base = sample((96, 400), torch.bfloat16, seed=1)
    x = make(base.to(device))
    assert not x.is_contiguous()
    row, col = quantize_row_col(x, rht_signs=OTHER_SIGNS, col_stochastic=True,
                                seed=5, row_offset=0, col_offset=77)
    assert seen == [x.stride()]
    want_row, want_col = reference_pair(make(base), OTHER_SIGNS, col_sr=True, seed=5,
                                        col_offset=77)
    same_triple(row, want_row)
    same_triple(col, want_col)


def special_values(dtype):
    """Zeros, an all-zero block, huge and tiny values, and blocks with NaN / +-Inf."""
    x = sample((48, 64), torch.float32, seed=3)
    x[0:16, 0:16] = 0.0                                      # all-zero 1x16 and 16x1 blocks
    x[16, :] = torch.finfo(dtype).max / 2                    # huge
    x[17, :16] = torch.finfo(dtype).tiny / 4 if dtype != torch.float16 else 1e-7  # subnormal
    x[20, 3] = float("nan")
    x[21, 40] = float("inf")
    x[33, 50] = -float("inf")
    x[34, 60] = -float("nan")
    x[40, :] = -0.0
    return x.to(dtype)


@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_special_values(device, same_triple, dtype, stochastic):
    x = special_values(DTYPES[dtype])
    row, col = quantize_row_col(x.to(device), rht_signs=SIGNS,
                                row_stochastic=stochastic,
                                col_stochastic=stochastic, seed=9,
                                row_offset=0, col_offset=2**62)
    want_row, want_col = reference_pair(x, SIGNS, stochastic, stochastic, 9, 0, 2**62)
    assert torch.isnan(row[2]) and torch.isnan(col[2])       # non-finite input -> NaN amax
    same_triple(row, want_row)
    same_triple(col, want_col)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_finite_extremes(device, same_triple, dtype):
    """Only finite values, across the whole range: amax stays finite."""
    x = special_values(DTYPES[dtype]).float()
    x = torch.where(torch.isfinite(x), x, torch.zeros_like(x)).to(DTYPES[dtype])
    row, col = quantize_row_col(x.to(device), rht_signs=SIGNS)
    want_row, want_col = reference_pair(x, SIGNS)
    assert torch.isfinite(row[2])
    same_triple(row, want_row)
    same_triple(col, want_col)


def test_all_zero_tensor(device, same_triple):
    x = torch.zeros(20, 32, dtype=torch.bfloat16)
    row, col = quantize_row_col(x.to(device), rht_signs=SIGNS)
    want_row, want_col = reference_pair(x, SIGNS)
    same_triple(row, want_row)
    same_triple(col, want_col)
    assert row[2].item() == 0 and not row[0].any()


@pytest.mark.parametrize("row_amax,col_amax", [(3.0, 0.5), (1e-30, 1e30), (float("inf"), 0.0),
                                               (float("nan"), 7.0)])
def test_given_amax(device, same_triple, row_amax, col_amax):
    """A caller's amax is used as is (smaller than the data: saturation; non-finite: NaN)."""
    x = sample((40, 64), torch.bfloat16, seed=4)
    ra, ca = torch.tensor(row_amax), torch.tensor(col_amax)
    row, col = quantize_row_col(x.to(device), rht_signs=SIGNS,
                                row_amax=ra.to(device), col_amax=ca.to(device),
                                col_stochastic=True, seed=3, col_offset=5)
    want_row, want_col = reference_pair(x, SIGNS, col_sr=True, seed=3, col_offset=5,
                                        row_amax=ra, col_amax=ca)
    same_triple(row, want_row)
    same_triple(col, want_col)


def test_measured_amax_equals_given(device, same_triple):
    x = sample((64, 96), torch.float32, seed=5)
    row, col = quantize_row_col(x.to(device), rht_signs=SIGNS)
    again = quantize_row_col(x.to(device), rht_signs=SIGNS,
                             row_amax=row[2], col_amax=col[2])
    same_triple(again[0], row)
    same_triple(again[1], col)
    assert row[2].item() == x.abs().max().item()
    assert col[2].item() == R.tensor_amax(R.rht(x.t().contiguous(), SIGNS)).item()


def test_one_copy_only(device, same_triple):
    x = sample((50, 32), torch.bfloat16, seed=6)
    want_row, want_col = reference_pair(x, SIGNS, col_sr=True, seed=1, col_offset=9)
    row, col = quantize_row_col(x.to(device), rowwise=False, rht_signs=SIGNS,
                                col_stochastic=True, seed=1, col_offset=9)
    assert row is None
    same_triple(col, want_col)
    row, col = quantize_row_col(x.to(device), columnwise=False)
    assert col is None
    same_triple(row, want_row)


def test_default_col_offset_follows_row_range(device, same_triple):
    """Through lowprec.quantize_row_col, row and column SR draw from disjoint counter
    ranges unless told otherwise: the column range starts ceil(M*K/4) after row_offset."""
    m, k, offset = 37, 48, 2**64 - 100
    x = sample((m, k), torch.float32, seed=7)
    row, col = lowprec.quantize_row_col(x.to(device), rht=True, sign_vector=SIGNS,
                                        row_stochastic=True, col_stochastic=True, seed=11,
                                        row_offset=offset, backend="triton")
    want_row, want_col = reference_pair(x, SIGNS, True, True, 11, offset,
                                        (offset + -(-m * k // 4)) % 2**64)
    same_triple((row.data, row.scale, row.amax), want_row)
    same_triple((col.data, col.scale, col.amax), want_col)


def test_empty_rows(device):
    row, col = quantize_row_col(torch.zeros(0, 32, device=device),
                                rht_signs=SIGNS)
    assert row[0].shape == (0, 16) and col[0].shape == (32, 0) and row[2].item() == 0


def test_leading_dims_flatten(device, same_triple):
    x = sample((3, 10, 32), torch.bfloat16, seed=8)
    row, col = quantize_row_col(x.to(device), rht_signs=SIGNS)
    want_row, want_col = reference_pair(x.reshape(30, 32), SIGNS)
    same_triple(row, want_row)
    same_triple(col, want_col)


def test_sr_is_unbiased_on_average(device):
    """SR of 1.3 between the grid points 1 and 1.5 averages to 1.3 (bound: 5 sigma)."""
    x = torch.full((16, 4096), 1.3)
    x[:, ::16] = 6.0               # every block's amax is 6: S_enc = 448, s_b = 448, enc = 1
    row, _ = quantize_row_col(x.to(device), columnwise=False,
                              row_stochastic=True, seed=2024)
    codes = R.unpack_codes(row[0].cpu()).reshape(16, 256, 16)[:, :, 1:]
    body = R.e2m1_values(codes).flatten()                # the grid values drawn
    assert set(body.unique().tolist()) == {1.0, 1.5}
    # Each element is 1 or 1.5 with p = 0.6: sd 0.5 * sqrt(p (1 - p)) per element.
    sd_of_mean = 0.5 * (0.6 * 0.4) ** 0.5 / body.numel() ** 0.5
    assert abs(body.double().mean().item() - 1.3) < 5 * sd_of_mean
