"""lowprec.quantize_row_col / quantize_weight_2d: validation once in ops.py, and the bits.

Expected values are built here from ``reference.quantize_nvfp4`` on explicitly padded and
transposed tensors (not from ``reference.quantize_row_col``, whose composition is what is
under test for the reference backend), so a wrong pad, transpose, RHT placement, offset or
amax in either the reference spec or a backend fails. Mutations tried: the default
``col_offset`` starting at ``row_offset`` (test_default_col_offset fails), the reference
W^T scales not transposed (test_weight_2d fails).
"""

import pytest
import torch
import torch.nn.functional as F

import lowprec
from lowprec import reference as R

BACKENDS = ["reference", "cpu"]
SIGNS = (1, -1, 1, 1, -1, -1, 1, -1, 1, 1, 1, -1, -1, 1, -1, 1)


def triple(t):
    return t.data, t.scale.view(torch.uint8), t.amax


def assert_same(t, expected):
    data, scale, amax = expected
    assert torch.equal(t.data, data)
    assert torch.equal(t.scale.view(torch.uint8), scale.view(torch.uint8))
    assert torch.equal(t.amax, amax)


def columnwise_by_hand(x2d, **kwargs):
    xt = F.pad(x2d, (0, 0, 0, -x2d.shape[0] % 16)).t().contiguous()   # [K, M_pad]
    return R.quantize_nvfp4(xt, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m", [1, 16, 37])
@pytest.mark.parametrize("rht", [False, True])
def test_both_copies_equal_two_plain_quantizations(backend, m, rht):
    x = torch.randn(m, 48, generator=torch.Generator().manual_seed(m)).to(torch.bfloat16)
    row, col = lowprec.quantize_row_col(x, rht=rht, sign_vector=SIGNS, row_stochastic=True,
                                        col_stochastic=True, seed=7, row_offset=5,
                                        col_offset=1000, backend=backend)
    assert row.shape == (m, 48) and col.shape == (48, -(-m // 16) * 16)
    assert col.rht_signs == (SIGNS if rht else None)
    assert_same(row, R.quantize_nvfp4(x, stochastic=True, seed=7, offset=5))
    assert_same(col, columnwise_by_hand(x, rht_signs=SIGNS if rht else None, stochastic=True,
                                        seed=7, offset=1000))


@pytest.mark.parametrize("backend", BACKENDS + ["triton"])
def test_leading_dims_are_flattened(backend):
    """``x [B, T, K]`` is ``x [B*T, K]``: every backend returns the rowwise codes and
    scales as ``[M, ...]`` (the CPU/CUDA build once kept ``[B, T, ...]``, Triton ``[M, ...]``;
    the GPU check caught it comparing the two)."""
    x = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    row, col = lowprec.quantize_row_col(x, backend=backend)
    assert row.data.shape == (21, 16) and row.scale.shape == (21, 2)
    assert_same(row, R.quantize_nvfp4(x.reshape(21, 32)))
    assert_same(col, columnwise_by_hand(x.reshape(21, 32)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_col_offset_follows_the_row_range(backend):
    m, k = 21, 32
    x = torch.randn(3, 7, k, generator=torch.Generator().manual_seed(1))
    _, col = lowprec.quantize_row_col(x, rowwise=False, col_stochastic=True, seed=3,
                                      row_offset=2**64 - 1, backend=backend)
    # ceil(M*K/4) counters after row_offset, wrapping at 2^64
    offset = (2**64 - 1 + (m * k + 3) // 4) % 2**64
    assert_same(col, columnwise_by_hand(x.reshape(m, k), stochastic=True, seed=3,
                                        offset=offset))


@pytest.mark.parametrize("backend", BACKENDS)
def test_given_amaxes_and_one_copy(backend):
    x = torch.randn(32, 32, generator=torch.Generator().manual_seed(2))
    row, col = lowprec.quantize_row_col(x, columnwise=False, row_amax=10.0, backend=backend)
    assert col is None
    assert_same(row, R.quantize_nvfp4(x, amax=torch.tensor(10.0)))
    row, col = lowprec.quantize_row_col(x, rowwise=False, col_amax=3.0, backend=backend)
    assert row is None
    assert_same(col, columnwise_by_hand(x, amax=torch.tensor(3.0)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stochastic", [False, True])
def test_weight_2d(backend, stochastic):
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(3))
    row, col = lowprec.quantize_weight_2d(w, stochastic=stochastic, seed=9, offset=4,
                                          backend=backend)
    expected = R.quantize_nvfp4(w, block="16x16", stochastic=stochastic, seed=9, offset=4)
    assert_same(row, expected)
    assert row.block == col.block == "16x16" and col.shape == (64, 48)
    # W^T: the transposed codes and tile scales of W (with RNE also W^T quantized anew)
    codes = R.unpack_codes(expected[0]).t().contiguous()
    assert torch.equal(R.unpack_codes(col.data), codes)
    if not stochastic:
        assert_same(col, R.quantize_nvfp4(w.t().contiguous(), block="16x16"))
    assert lowprec.quantize_weight_2d(w, columnwise=False, backend=backend)[1] is None


@pytest.mark.parametrize("call, error, message", [
    (lambda: lowprec.quantize_row_col(torch.zeros(4, 20)), ValueError, r"K % 16.*\(4, 20\)"),
    (lambda: lowprec.quantize_row_col(torch.zeros(4, 16, dtype=torch.int32)), TypeError,
     "torch.int32"),
    (lambda: lowprec.quantize_row_col(torch.zeros(4, 16), rowwise=False, columnwise=False),
     ValueError, "both False"),
    (lambda: lowprec.quantize_row_col(torch.zeros(4, 16), rht=True, sign_vector=(1, 2)),
     ValueError, r"\(1, 2\)"),
    (lambda: lowprec.quantize_row_col(torch.zeros(4, 16), seed=2**64), ValueError,
     str(2**64)),
    (lambda: lowprec.quantize_row_col(torch.zeros(4, 16), col_offset=-1), ValueError,
     "col_offset.*-1"),
    (lambda: lowprec.quantize_weight_2d(torch.zeros(24, 32)), ValueError, r"\(24, 32\)"),
    (lambda: lowprec.quantize_weight_2d(torch.zeros(2, 16, 16)), ValueError, r"\(2, 16, 16\)"),
])
def test_errors_name_the_value(call, error, message):
    with pytest.raises(error, match=message):
        call()
