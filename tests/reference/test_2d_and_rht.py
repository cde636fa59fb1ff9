"""2-D weight scaling (NUMERICS 5) and the random Hadamard transform (NUMERICS 6)."""

import pytest
import torch

import lowprec
from lowprec import reference as R


@pytest.mark.parametrize("shape", [(16, 16), (48, 32), (64, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_columnwise_copy_is_the_exact_transpose(shape, dtype):
    torch.manual_seed(0)
    w = (torch.randn(shape) * torch.logspace(-3, 3, shape[1])).to(dtype)
    rows = lowprec.quantize_nvfp4(w, block="16x16", backend="reference")
    cols = lowprec.quantize_nvfp4(w.T, block="16x16", backend="reference")
    assert torch.equal(cols.codes(), rows.codes().T)
    tile_rows = rows.scale.view(torch.uint8)[::16]           # [N/16, K/16]
    tile_cols = cols.scale.view(torch.uint8)[::16]           # [K/16, N/16]
    assert torch.equal(tile_cols, tile_rows.T)
    # The tile scale is repeated for each of its 16 rows.
    assert torch.equal(rows.scale.view(torch.uint8), tile_rows.repeat_interleave(16, 0))


def test_2d_tile_scale_uses_the_whole_tile():
    w = torch.ones(32, 32)
    w[17, 3] = 5.0                          # tile (1, 0) only
    q = lowprec.quantize_nvfp4(w, block="16x16", backend="reference")
    s = q.scale.float()
    assert (s[16:, 0] == s[16, 0]).all() and s[16, 0] > s[0, 0]
    assert (s[:, 1] == s[0, 1]).all()


def test_rht_matrix_is_orthogonal():
    m = R.rht_matrix().double()
    assert torch.equal(m @ m.T, torch.eye(16, dtype=torch.float64))
    assert set(m.abs().unique().tolist()) == {0.25}
    h = R.hadamard_matrix()
    assert torch.equal(h, h.T)                               # Sylvester: symmetric
    with_signs = R.rht_matrix([-1] * 16).double()
    assert torch.equal(with_signs @ with_signs.T, torch.eye(16, dtype=torch.float64))


def test_rht_output_is_rounded_to_bf16_once():
    """For bf16 inputs on a fixed-point grid the FP32 sum is exact, so rht(x) must equal the
    exact FP64 product rounded once to bf16 (intermediate bf16 roundings would not)."""
    torch.manual_seed(1)
    x = (torch.randint(-255, 256, (256, 64)) * 2.0 ** -6).to(torch.bfloat16)
    exact = x.double().reshape(-1, 16) @ R.rht_matrix().double()
    assert torch.equal(exact.float().double(), exact)        # the FP32 sum is exact here
    assert torch.equal(R.rht(x), exact.reshape(x.shape).to(torch.bfloat16))


def test_rht_fp32_sum_order_is_the_pairwise_butterfly():
    """FP32 inputs: the sum order is fixed; check against a scalar radix-2 butterfly."""
    torch.manual_seed(2)
    x = torch.randn(8, 16) * torch.logspace(-6, 6, 16)       # wide range: order matters
    signs = R.DEFAULT_SIGN_VECTOR
    out = []
    for row in x.tolist():
        v = torch.tensor([r * s * 0.25 for r, s in zip(row, signs)], dtype=torch.float32)
        for bit in range(4):                                  # stage on index bit 0 first
            step = 1 << bit
            nxt = v.clone()
            for j in range(16):
                if j & step == 0:
                    nxt[j] = v[j] + v[j | step]
                    nxt[j | step] = v[j] - v[j | step]
            v = nxt
        out.append(v)
    assert torch.equal(R.rht(x), torch.stack(out).to(torch.bfloat16))


def test_product_of_transformed_operands_equals_the_plain_product():
    """(A diag(s) H)(B diag(s) H)^T = A B^T: in FP32 within accumulation rounding."""
    torch.manual_seed(3)
    k = 256
    a, b = torch.randn(32, k), torch.randn(24, k)
    m = torch.block_diag(*[R.rht_matrix()] * (k // 16))
    at, bt = a @ m, b @ m                                    # FP32, no bf16 rounding
    exact = a.double() @ b.double().T
    got = (at @ bt.T).double()
    # Each transformed entry sums 16 terms (error <= 15u |.|), the product K terms.
    u = 2.0 ** -24
    gamma = lambda n: n * u / (1 - n * u)
    bound = (2 * gamma(16) + gamma(k)) * 1.01 * ((a.double().abs() @ m.double().abs())
                                                 @ (b.double().abs() @ m.double().abs()).T)
    assert ((got - exact).abs() <= bound).all()
    # With the bf16 output rounding of rht() the same identity holds within 2^-8 relative.
    ar, br = R.rht(a).double(), R.rht(b).double()
    bound_bf16 = (2 * 2.0 ** -9 + 2 * gamma(16) + gamma(k)) * 1.01 * (ar.abs() @ br.abs().T)
    assert ((ar @ br.T - exact).abs() <= bound_bf16 + 2 * 2.0 ** -9 * bound_bf16).all()


def test_rht_quantize_uses_the_amax_of_the_transformed_tensor():
    torch.manual_seed(4)
    x = torch.randn(16, 64).to(torch.bfloat16)
    q = lowprec.quantize_nvfp4(x, rht=True, backend="reference")
    assert q.amax.item() == R.rht(x).float().abs().max().item()
    plain = lowprec.quantize_nvfp4(R.rht(x), backend="reference")
    assert torch.equal(q.data, plain.data) and torch.equal(q.scale.view(torch.uint8),
                                                           plain.scale.view(torch.uint8))
