"""The CPU backend quantizes in FP32 chunks of 2^22 values (quantize_cpu.cpp,
kChunkElements) instead of one FP32 copy of the whole input; these tensors span several
chunks, with a last partial one, and must still equal the reference bit for bit: the
global amax over all chunks, SR counters from the global flat index, 16x16 tiles whole.

Mutants killed (each re-run once): the SR counter using the row within the chunk
instead of the global row (``int64_t row = r;`` in encode_rows), and the amax of the
last chunk only (``bits = max_abs_bits(...)`` without the max with the previous bits).
"""

import torch
from csrc_helpers import assert_bits_equal

from lowprec import reference as R
from lowprec.backends import cpu as cpu_backend

CHUNK = 1 << 22


def values(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.exp2(torch.randint(-8, 9, (rows, 1),
                                                                        generator=g).float())
    x[-1, 0] = 500.0                    # the global amax sits in the last chunk
    return x.to(torch.bfloat16)


def test_rowwise_chunks_with_rht_and_sr():
    x = values(CHUNK // 16 + 48 + 3, 16, seed=0)        # a full chunk + a partial one
    kwargs = dict(rht_signs=R.DEFAULT_SIGN_VECTOR, stochastic=True, seed=11, offset=2**64 - 7)
    assert_bits_equal(cpu_backend.quantize_nvfp4(x, **kwargs), R.quantize_nvfp4(x, **kwargs),
                      "1x16 chunks")


def test_16x16_chunks_with_a_given_amax():
    x = values(CHUNK // 32 + 32, 32, seed=1)
    kwargs = dict(block="16x16", amax=torch.tensor(600.0))
    assert_bits_equal(cpu_backend.quantize_nvfp4(x, **kwargs), R.quantize_nvfp4(x, **kwargs),
                      "16x16 chunks")


def test_columnwise_chunks():
    """The columnwise copy is chunked over K (the rows of the [K, M_pad] transpose)."""
    x = values(21, CHUNK // 32 + 64, seed=2)             # M_pad = 32: K/2^17 chunks
    row, col = cpu_backend.quantize_row_col(
        x, rht_signs=R.DEFAULT_SIGN_VECTOR, col_stochastic=True, seed=5, col_offset=3)
    padded = torch.cat([x, x.new_zeros(11, x.shape[1])]).t()
    want = R.quantize_nvfp4(padded, rht_signs=R.DEFAULT_SIGN_VECTOR, stochastic=True, seed=5,
                            offset=3)
    assert_bits_equal(col, want, "columnwise chunks")
    assert_bits_equal(row, R.quantize_nvfp4(x), "rowwise")
