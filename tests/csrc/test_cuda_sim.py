"""The CUDA kernels of csrc/quantize.cu and csrc/nvfp4_gemm_values.cu, run on the CPU by cuda_sim/ (one std::thread per
CUDA thread), equal the reference bit for bit.

This checks what the CPU build cannot: the kernels' own indexing, tiling, shared-memory
transposes, warp shuffles, amax atomics and grid-stride loops (the simulated GPU has 2
SMs of 1 block, so every kernel loops over many tiles per block). What it cannot check is
anything of the hardware: the device intrinsics' rounding (__fmul_rn etc. take the host
path here), the memory model, timing. Those are for `pytest -m gpu` on a GPU.
"""

import ctypes

import pytest
import torch
from csrc_helpers import (UINT64, amax_tensor, assert_bits_equal, build_sim, float_tensors,
                          make_values, padded_transpose, sim_quantize, sim_rowcol)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowprec import reference as R
from lowprec.backends import extension

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def sim():
    """The simulator library, built once per source version into build/cuda_sim/."""
    return build_sim()


SIGNS = st.sampled_from([None, R.DEFAULT_SIGN_VECTOR])
AMAXES = st.sampled_from([None, 0.0, 1.0, 3.0e38, float("inf"), float("nan")])
# Every kernel variant (same bits by contract) runs in the tests below.
NVFP4_VARIANTS = st.sampled_from(sorted(extension.CUDA_VARIANTS["quantize_nvfp4"].values()))
ROW_COL_VARIANTS = st.sampled_from(sorted(extension.CUDA_VARIANTS["quantize_row_col"].values()))
TILE_VARIANTS = st.sampled_from(sorted(extension.CUDA_VARIANTS["quantize_weight_2d"].values()))


@SETTINGS
@given(x=float_tensors(min_rows=1, max_rows=90, max_k=160), signs=SIGNS, stochastic=st.booleans(),
       seed=UINT64, offset=UINT64, amax=AMAXES, variant=NVFP4_VARIANTS)
def test_1x16_kernel_equals_reference(sim, x, signs, stochastic, seed, offset, amax, variant):
    kwargs = dict(rht_signs=signs, stochastic=stochastic, seed=seed, offset=offset,
                  amax=amax_tensor(amax))
    got, _ = sim_quantize(sim, x, variant=variant, **kwargs)
    assert_bits_equal(got, R.quantize_nvfp4(x, **kwargs), f"1x16 kernel, variant {variant}")


@SETTINGS
@given(x=float_tensors(min_rows=16, row_multiple=16, max_rows=80, max_k=160, lead=False),
       signs=SIGNS, stochastic=st.booleans(), seed=UINT64, offset=UINT64, amax=AMAXES,
       transposed=st.booleans(), variant=TILE_VARIANTS)
def test_16x16_kernel_equals_reference(sim, x, signs, stochastic, seed, offset, amax, transposed,
                                       variant):
    if transposed:
        signs = None  # the transposed copy exists for W (no RHT)
    kwargs = dict(rht_signs=signs, stochastic=stochastic, seed=seed, offset=offset,
                  amax=amax_tensor(amax))
    row, col = sim_quantize(sim, x, block_rows=16, transposed=transposed, variant=variant,
                            **kwargs)
    assert_bits_equal(row, R.quantize_nvfp4(x, block="16x16", **kwargs), "16x16 kernel")
    if transposed:
        _, cpu_col = extension.quantize_weight_2d(x, stochastic=stochastic, seed=seed,
                                                  offset=offset, amax=amax_tensor(amax))
        assert_bits_equal(col, cpu_col, "16x16 transposed copy")
        assert torch.equal(R.unpack_codes(col[0]), R.unpack_codes(row[0]).T)


@SETTINGS
@given(x=float_tensors(min_rows=1, max_rows=150, max_k=176), signs=SIGNS, rowwise=st.booleans(),
       row_sr=st.booleans(), col_sr=st.booleans(), seed=UINT64, row_offset=UINT64,
       col_offset=UINT64, row_amax=AMAXES, col_amax=AMAXES, variant=ROW_COL_VARIANTS)
def test_fused_rowwise_columnwise_kernel_equals_reference(sim, x, signs, rowwise, row_sr, col_sr,
                                                         seed, row_offset, col_offset, row_amax,
                                                         col_amax, variant):
    if x.shape[-1] == 0:
        return  # nothing to launch
    row, col = sim_rowcol(sim, x, rht_signs=signs, rowwise=rowwise, row_sr=row_sr,
                          col_sr=col_sr, seed=seed, row_offset=row_offset,
                          col_offset=col_offset, row_amax=amax_tensor(row_amax),
                          col_amax=amax_tensor(col_amax), variant=variant)
    if rowwise:
        expected = R.quantize_nvfp4(x.reshape(-1, x.shape[-1]), stochastic=row_sr, seed=seed,
                                    offset=row_offset, amax=amax_tensor(row_amax))
        assert_bits_equal(row, expected, "fused kernel, rowwise")
    expected = R.quantize_nvfp4(padded_transpose(x), rht_signs=signs, stochastic=col_sr,
                                seed=seed, offset=col_offset, amax=amax_tensor(col_amax))
    assert_bits_equal(col, expected, "fused kernel, columnwise")


@SETTINGS
@given(x=float_tensors(min_rows=1, max_rows=90, max_k=160), signs=SIGNS, rowwise=st.booleans(),
       seed=UINT64, row_offset=UINT64, col_offset=UINT64)
def test_the_baseline_kernels_read_a_key_in_memory(sim, x, signs, rowwise, seed, row_offset,
                                                   col_offset):
    """Device SR keys (lowprec.sr_keys): the fused kernel's and the rowwise 1x16 kernel's
    baselines, which quantize_row_col runs for a key in memory, read the key from memory
    (the by-value seed they are also given is another key) and equal the reference."""
    if x.shape[-1] == 0:
        return
    row, col = sim_rowcol(sim, x, rht_signs=signs, rowwise=rowwise, row_sr=True, col_sr=True,
                          seed=seed, row_offset=row_offset, col_offset=col_offset,
                          row_amax=None, col_amax=None, seed_in_memory=True)
    x2 = x.reshape(-1, x.shape[-1])
    if rowwise:
        assert_bits_equal(row, R.quantize_nvfp4(x2, stochastic=True, seed=seed,
                                                offset=row_offset), "fused kernel, rowwise")
    assert_bits_equal(col, R.quantize_nvfp4(padded_transpose(x), rht_signs=signs,
                                            stochastic=True, seed=seed, offset=col_offset),
                      "fused kernel, columnwise")
    got, _ = sim_quantize(sim, x, stochastic=True, seed=seed, offset=row_offset,
                          seed_in_memory=True)
    assert_bits_equal(got, R.quantize_nvfp4(x, stochastic=True, seed=seed, offset=row_offset),
                      "1x16 kernel")


@pytest.fixture
def wide_sim(sim):
    """The simulator as a GPU of 300 SMs: amax launches of up to 300 blocks, so the
    quantize kernels reduce more partials than a block has threads (256)."""
    previous = sim.sim_set_sms(300)
    yield sim
    sim.sim_set_sms(previous)


@pytest.mark.slow  # 10-20 s each: two launches of 300 x 256 simulated threads
@pytest.mark.parametrize("variant", sorted(extension.CUDA_VARIANTS["quantize_nvfp4"].values()))
def test_1x16_reduces_more_partials_than_threads(wide_sim, variant):
    x = make_values((4800, 256), torch.bfloat16, "heavy", 7)   # 76800 units: 300 blocks
    x[4799, 200] = 1.0e30                                        # the amax, in the last block
    used = ctypes.c_int(-1)
    got, _ = sim_quantize(wide_sim, x, rht_signs=R.DEFAULT_SIGN_VECTOR, variant=variant,
                          partials=used)
    assert used.value == 300
    assert_bits_equal(got, extension.quantize_nvfp4(x, rht_signs=R.DEFAULT_SIGN_VECTOR),
                      f"1x16 kernel, variant {variant}, 300 partials")


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(extension.CUDA_VARIANTS["quantize_row_col"].values()))
def test_fused_reduces_more_partials_than_threads(wide_sim, variant):
    x = make_values((4800, 256), torch.bfloat16, "heavy", 8)   # 300 tiles of 64x64
    x[4790, 3] = -2.0e30
    kwargs = dict(rht_signs=R.DEFAULT_SIGN_VECTOR, seed=3, row_offset=1, col_offset=2)
    row, col = sim_rowcol(wide_sim, x, rowwise=True, row_sr=False, col_sr=True,
                          row_amax=None, col_amax=None, variant=variant, **kwargs)
    c_row, c_col = extension.quantize_row_col(x, col_stochastic=True, **kwargs)
    assert_bits_equal(row, c_row, f"fused kernel, variant {variant}, rowwise")
    assert_bits_equal(col, c_col, f"fused kernel, variant {variant}, columnwise")


@pytest.mark.parametrize("a_amax", [0.0, 1.0e-40, 5.0, 3.0e38, float("inf"), float("nan")])
@pytest.mark.parametrize("b_amax", [0.3, 0.0, 2688.0])
def test_the_gemm_scalars_kernel_gives_the_references_alpha(sim, a_amax, b_amax):
    """nvfp4_gemm_values' alpha (cuBLASLt reads it from memory) and beta = 0: alpha is
    reference.nvfp4_gemm's S_dec(A) * S_dec(B) in FP32, also for zero, subnormal, huge,
    infinite and NaN amaxes."""
    amaxes = torch.tensor([a_amax, b_amax], dtype=torch.float32)
    out = torch.full((2,), float("nan"), dtype=torch.float32)
    assert sim.sim_gemm_scalars(amaxes.data_ptr(), amaxes.data_ptr() + 4, out.data_ptr()) == 0
    alpha = R.global_decode_scale(amaxes[0]) * R.global_decode_scale(amaxes[1])
    assert_bits_equal(out, torch.stack([alpha.to(torch.float32), torch.tensor(0.0)]))

