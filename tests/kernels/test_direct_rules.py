"""One direct test per load-bearing rule, on every backend that runs here (reference, the
C++ cpu backend, Triton): expected bits are worked out by hand in each docstring.

Mutants killed (each re-run once by hand; "ref", "C++", "Triton" name where):
* S_enc product order: ``(block_amax / 6) * S_enc`` instead of
  ``block_amax * (S_enc * (1/6))`` (ref block_scales, C++ block_scale_bits).
* E4M3 subnormal tie: C++ e4m3_rne_bits ``rest >= half`` (ties away from zero); Triton
  e4m3_rne with the binade floor at -7 instead of -6.
* SR ``<`` vs ``<=``: ``draw <= threshold`` (ref e2m1_round_stochastic, C++
  e2m1_sr_magnitude, Triton e2m1_stochastic).
* Columnwise padding value: -0.0 instead of +0.0 for the rows past M (C++
  prepare_columns, Triton load_f32's ``other``).
* SR counter ignoring the K tile (``pid_k * BLOCK_K`` dropped in quantize_row_col.py's
  rowwise counters, or in quantize_2d.py's): test_sr_spans_several_k_tiles.
"""

import pytest
import torch

import lowprec
from lowprec import reference as R

from .conftest import DEVICE

BACKENDS = ["reference"] + [b for b in ("cpu", "triton")
                            if lowprec.available(b, device_type="cpu" if b == "cpu" else DEVICE)]


def on(backend, x):
    return x.to(DEVICE if backend == "triton" else "cpu")


def codes_of(q):
    return R.unpack_codes(q.data.cpu())


@pytest.mark.parametrize("backend", BACKENDS)
def test_s_enc_product_order(backend):
    """amax 6 gives S_enc = 448. Block amax 4.5: 4.5 * (448 * fp32(1/6)) = 336.0000...1,
    just above the E4M3 tie 336 between 320 (0x7A) and 352 (0x7B), so the scale is 0x7B;
    ``(4.5 / 6) * 448`` is exactly 336 and rounds to even, 320 (0x7A)."""
    x = torch.zeros(1, 32)
    x[0, 0] = 6.0
    x[0, 16] = 4.5
    q = lowprec.quantize_nvfp4(on(backend, x), backend=backend)
    assert q.scale.cpu().view(torch.uint8).tolist() == [[0x7E, 0x7B]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_e4m3_subnormal_ties(backend):
    """FP8 of a row whose amax is 448 has scale 1, so the data is e4m3_rne(x) itself.
    E4M3 subnormals are m * 2^-9: ties m + 1/2 go to the even m."""
    u = 2.0 ** -9
    x = torch.tensor([[448.0, 0.5 * u, 1.5 * u, 2.5 * u, 3.5 * u, 6.5 * u, 7.5 * u, 0.75 * u,
                       -2.5 * u, -0.5 * u, 1.25 * u, 5.5 * u, 4.5 * u, 0.0, 0.0, 0.0]])
    want = [0x7E, 0x00, 0x02, 0x02, 0x04, 0x06, 0x08, 0x01,
            0x82, 0x80, 0x01, 0x06, 0x04, 0x00, 0x00, 0x00]
    f = lowprec.quantize_fp8(on(backend, x), backend=backend)
    assert f.scale.cpu().item() == 1.0
    assert f.data.cpu().view(torch.uint8).flatten().tolist() == want


@pytest.mark.parametrize("backend", BACKENDS)
def test_sr_strict_less_than(backend):
    """With amax = 2688 and a block amax of 6, S_enc = 1, s_b = 1 and enc_b = 1, so
    v = x. For 0 <= x < 0.5 (lo = 0, hi = 0.5) SR rounds up iff
    ``float(r >> 8) < x * 2^25``. Element j gets x_j = (r_j >> 8) * 2^-25, the draw
    exactly at the threshold: it must round down (code 0); x_j + 2^-25 rounds up (code 1).
    The words r_j come from the Philox known-answer-tested ``R.random_words``."""
    seed, offset = 0x1234_5678_9ABC_DEF0, 2**64 - 3          # the counters wrap too
    n = 64
    words = R.random_words(seed, offset, n)
    draws = (words >> 8).to(torch.float64)
    x = (draws * 2.0 ** -25).to(torch.float32)
    above = ((draws + 1) * 2.0 ** -25).to(torch.float32)
    for block in range(n // 16):                             # element 0 of each block: 6
        x[16 * block] = 6.0
        above[16 * block] = 6.0
    for values, want_code in ((x, 0), (above, 1)):
        q = lowprec.quantize_nvfp4(on(backend, values.reshape(2, 32)), stochastic=True,
                                   seed=seed, offset=offset, amax=2688.0, backend=backend)
        codes = codes_of(q).flatten()
        assert q.scale.cpu().view(torch.uint8).flatten().tolist() == [0x38] * 4   # s_b = 1
        rest = torch.ones(n, dtype=torch.bool)
        rest[::16] = False
        assert (codes[::16] == 7).all()
        assert (codes[rest] == want_code).all(), (backend, want_code, codes)


def _rowcol(backend):
    if backend == "cpu":
        from lowprec.backends.cpu import quantize_row_col
    else:
        from lowprec.kernels.backend import quantize_row_col
    return quantize_row_col


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_columnwise_padding_is_positive_zero(backend, stochastic):
    """M = 17 tokens of -1 pad to M_pad = 32 with +0.0 (NUMERICS 10): in the columnwise
    copy, positions 17..31 of each column are code 0 (+0), never 8 (-0), also under SR.
    Positions 0..16: amax 1 gives S_enc = 2688, s_b = e4m3(min(2688 * fp32(1/6), 448)) =
    448, enc_b = 1 / (448 / 2688) ~ 6, so v ~ -6 saturates to magnitude 7: code 0xF."""
    x = -torch.ones(17, 32)
    _, col = _rowcol(backend)(on(backend, x), col_stochastic=stochastic, seed=3,
                              row_offset=0, col_offset=5, rowwise=False)
    codes = R.unpack_codes(col[0].cpu())                     # [K, M_pad]
    assert codes.shape == (32, 32)
    assert (codes[:, :17] == 0xF).all()
    assert (codes[:, 17:] == 0).all()


@pytest.mark.skipif(DEVICE != "cpu", reason="forces an interpreter tile size")
@pytest.mark.parametrize("kernel", ["1x16", "16x16"])
def test_sr_spans_several_k_tiles(monkeypatch, kernel):
    """The interpreter normally uses one 512-wide K tile; forcing 32-wide tiles makes a
    K = 160 row span five tiles, so each tile's SR counters must include its K start."""
    import lowprec.kernels.quantize_row_col as q1
    import lowprec.kernels.quantize_2d as q2
    module = q1 if kernel == "1x16" else q2
    monkeypatch.setattr(module, "tile_config", lambda m, k: (1, 32, 4))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(48, 160, generator=g)
    kwargs = dict(stochastic=True, seed=99, offset=2**40 + 1)
    if kernel == "1x16":
        row, col = q1.quantize_row_col(x, rowwise=True, columnwise=True, row_stochastic=True,
                                       col_stochastic=True, seed=99, row_offset=2**40 + 1,
                                       col_offset=7)
        want_col = R.quantize_nvfp4(x.t(), stochastic=True, seed=99, offset=7)
        assert torch.equal(col[0], want_col[0])
    else:
        row, _ = q2.quantize_2d(x, columnwise=False, **kwargs)
    want = R.quantize_nvfp4(x, block=kernel, **kwargs)
    assert torch.equal(row[0], want[0])
    assert torch.equal(row[1].view(torch.uint8), want[1].view(torch.uint8))
