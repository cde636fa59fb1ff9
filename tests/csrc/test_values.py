"""Values mode of the C++ quantizers (CPU build, and the CUDA kernels in the simulator).

In values mode (``row_values`` / ``col_values`` of ``quantize_row_col``, per copy;
``values`` of ``quantize_weight_2d``) a copy is ``(values bf16, empty float8_e4m3fn [0],
amax)`` where ``values`` is, bit for bit, ``reference.as_values`` of the packed copy the
same call gives in packed mode: ``e2m1(q) * s_b`` without the global scale, -0.0 kept,
every NaN the canonical 0x7FC0. The codes, scales, random words and amax are the packed
mode's; only the stores differ. The CPU build expands codes with the CUDA kernels' own
function (csrc/nvfp4_math.h block_values16); the simulator runs the kernels' values
stores (every variant). On a GPU (``-m gpu``): the CUDA ops against the CPU build.
"""

import ast
import os

import pytest
import torch
from csrc_helpers import (ROOT, UINT64, assert_bits_equal, build_sim, float_tensors,
                          make_values, padded_transpose,
                          sim_quantize, sim_rowcol)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

from lowprec import _C, checks, launch_trace
from lowprec import reference as R
from lowprec.backends import extension

S = R.DEFAULT_SIGN_VECTOR
E4M3 = torch.float8_e4m3fn
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SIM_SETTINGS = settings(max_examples=30, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
AMAXES = st.sampled_from([None, 0.0, 1.0, 3.0e38, float("inf"), float("nan")])
# (row_values, col_values): row only, col only, both, and neither (packed).
MODES = [(True, False), (False, True), (True, True), (False, False)]


def _amax(value):
    return None if value is None else torch.tensor(value, dtype=torch.float32)


def bits16(t):
    return t.view(torch.int16)


def assert_values_of(got, packed, what):
    """``got`` is the values-mode triple of the packed triple ``packed``."""
    values, empty, amax = got
    assert values.dtype == torch.bfloat16, what
    assert empty.dtype == E4M3 and empty.shape == (0,), what
    assert_bits_equal(got, R.as_values(packed), what)
    assert_bits_equal(amax, packed[2], f"{what}: amax")


def finite_specials(dtype, rows=37):
    """[rows, 64]: -0.0 rows and blocks, all-zero blocks, subnormal inputs, huge values,
    blocks whose scale underflows E4M3 to 0 (their negative codes give -0.0)."""
    g = torch.Generator().manual_seed(21)
    x = torch.randn(rows, 64, generator=g) * torch.exp2(torch.randint(-6, 7, (rows, 64),
                                                                      generator=g))
    x[0:16, 0:16] = 0.0
    x[1, 16:32] = -0.0
    x[20:rows, 32] = -0.0
    x[16, :] = torch.finfo(dtype).max / 2
    tiny = torch.finfo(dtype).tiny / 4 if dtype != torch.float16 else 1e-7
    x[17, :16] = tiny
    x[18, 48:64] = -tiny
    x[19, 0:16] = torch.linspace(-1e-3, 1e-3, 16)
    return x.to(dtype)


def nonfinite(dtype, which):
    x = finite_specials(dtype).float()
    x[16, :] = 3.0
    x[5, 7] = {"nan": float("nan"), "-nan": -float("nan"), "+inf": float("inf"),
               "-inf": -float("inf")}[which]
    return x.to(dtype)


# ----------------------------------------------------------------------------------
# CPU build
# ----------------------------------------------------------------------------------

@SETTINGS
@given(x=float_tensors(min_rows=1, max_rows=70, max_k=96), signs=st.sampled_from([None, S]),
       rowwise=st.booleans(), columnwise=st.booleans(), mode=st.sampled_from(MODES[:3]),
       row_sr=st.booleans(), col_sr=st.booleans(), seed=UINT64, row_offset=UINT64,
       col_offset=UINT64, row_amax=AMAXES, col_amax=AMAXES)
def test_cpu_row_col_values_are_those_of_the_packed_copies(x, signs, rowwise, columnwise, mode,
                                                           row_sr, col_sr, seed, row_offset,
                                                           col_offset, row_amax, col_amax):
    if x.shape[-1] == 0:
        return  # the reference cannot reshape [..., 0]
    row_values, col_values = mode
    kwargs = dict(rht_signs=signs, rowwise=rowwise, columnwise=columnwise, row_stochastic=row_sr,
                  col_stochastic=col_sr, seed=seed, row_offset=row_offset,
                  col_offset=col_offset, row_amax=_amax(row_amax), col_amax=_amax(col_amax))
    row, col = extension.quantize_row_col(x, row_values=row_values, col_values=col_values, **kwargs)
    p_row, p_col = extension.quantize_row_col(x, **kwargs)
    r_row, r_col = R.quantize_row_col(x, **kwargs)
    for got, packed, ref, values, name in ((row, p_row, r_row, row_values, "rowwise"),
                                           (col, p_col, r_col, col_values, "columnwise")):
        if packed is None:
            assert got is None
            continue
        assert_bits_equal(packed, ref, f"{name}: packed")
        if values:
            assert_values_of(got, ref, f"{name}: values")
        else:
            assert_bits_equal(got, ref, f"{name}: packed beside a values copy")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES[:3])
@pytest.mark.parametrize("rounding", [
    dict(), dict(row_stochastic=True, col_stochastic=True, seed=2 ** 64 - 3, row_offset=5,
                 col_offset=2 ** 40),
    dict(rht_signs=S), dict(rht_signs=S, col_stochastic=True, seed=7, col_offset=11)])
def test_cpu_row_col_values_on_special_values(dtype, mode, rounding):
    """Odd M (37: the columnwise copy's padded tokens), -0.0, zero and underflowing
    blocks, subnormals, huge values: equal to the reference's values mode."""
    x = finite_specials(dtype)
    row_values, col_values = mode
    row, col = extension.quantize_row_col(x, row_values=row_values, col_values=col_values,
                                          **rounding)
    want = R.quantize_row_col(x, row_values=row_values, col_values=col_values, **rounding)
    assert_bits_equal(row, want[0], "rowwise")
    assert_bits_equal(col, want[1], "columnwise")
    if col_values:
        assert col[0].shape == (64, 48)                       # [K, M_pad]
        if "rht_signs" not in rounding:                       # (the RHT mixes them in)
            assert (bits16(col[0][:, 37:]) == 0).all()       # padded tokens: +0
    for values, triple in ((row_values, row), (col_values, col)):
        if values:
            assert (bits16(triple[0]) == -32768).any()       # some -0.0 (0x8000) kept


@pytest.mark.parametrize("which", ["nan", "-nan", "+inf", "-inf"])
def test_cpu_values_of_a_nonfinite_tensor_are_the_canonical_nan(which):
    x = nonfinite(torch.bfloat16, which)
    row, col = extension.quantize_row_col(x, rht_signs=S, row_values=True, col_values=True)
    for triple in (row, col):
        assert (bits16(triple[0]) == 0x7FC0).all()
        assert torch.isnan(triple[2])
    w, _ = extension.quantize_weight_2d(x[:32], columnwise=False, values=True)
    assert (bits16(w[0]) == 0x7FC0).all()


def test_cpu_values_of_every_code_and_scale():
    """block_values16 over all 16 codes x all 128 scale bytes (E4M3 subnormals, 448, NaN):
    x built so that the block amax and the global amax give every scale byte."""
    for scale_byte in range(128):
        s = torch.tensor([scale_byte], dtype=torch.uint8).view(E4M3).float()
        grid = torch.tensor(R.E2M1_GRID + tuple(-v for v in R.E2M1_GRID))
        x = (grid * (s if torch.isfinite(s) else torch.tensor(float("nan")))).reshape(1, 16)
        # amax 2688 gives S_enc = 1: the block scale is e4m3(block_amax / 6) = s.
        got, _ = extension.quantize_row_col(x, columnwise=False, row_values=True,
                                            row_amax=torch.tensor(2688.0))
        packed, _ = R.quantize_row_col(x, columnwise=False, row_amax=torch.tensor(2688.0))
        assert_values_of(got, packed, f"scale byte {scale_byte}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rounding", [dict(), dict(stochastic=True, seed=2 ** 63 + 1, offset=9),
                                      dict(amax=torch.tensor(7.5)),
                                      dict(amax=torch.tensor(float("inf")))])
def test_cpu_weight_2d_values(dtype, rounding):
    w = make_values((48, 80), dtype, "mixed", 3)
    w[0:16, 0:16] = 0.0
    w[16, 16:32] = -0.0
    row, col = extension.quantize_weight_2d(w, columnwise=False, values=True, **rounding)
    assert col is None
    packed, _ = R.quantize_weight_2d(w, columnwise=False, **rounding)
    assert_values_of(row, packed, "weight_2d values")
    assert_bits_equal(row, R.quantize_weight_2d(w, columnwise=False, values=True, **rounding)[0])


def test_weight_2d_values_need_columnwise_false():
    w = make_values((32, 32), torch.bfloat16, "normal", 0)
    for call in (lambda: extension.quantize_weight_2d(w, values=True),
                 lambda: torch.ops.lowprec_C.quantize_weight_2d(w, True, False, 0, 0, None, 0,
                                                                True)):
        with pytest.raises(ValueError) as err:
            call()
        assert checks.WEIGHT_VALUES_ERROR in str(err.value)
    with FakeTensorMode():
        fake = torch.empty(32, 32, dtype=torch.bfloat16)
        with pytest.raises(ValueError, match="columnwise=False"):
            torch.ops.lowprec_C.quantize_weight_2d(fake, True, False, 0, 0, None, 0, True)


def test_the_message_is_the_triton_backends():
    """kernels/backend.py raises the same ValueError: its entry point and its fake both
    check through ``checks.weight_values`` (read from its source, so that no Triton import
    is needed here)."""
    with open(os.path.join(ROOT, "kernels", "backend.py")) as f:
        tree = ast.parse(f.read())
    checked_in = {function.name for function in ast.walk(tree)
                  if isinstance(function, ast.FunctionDef)
                  for node in ast.walk(function)
                  if isinstance(node, ast.Call) and getattr(node.func, "id", None)
                  == "weight_values"}
    assert {"quantize_weight_2d", "_"} <= checked_in


def test_fakes_give_the_real_shapes_and_dtypes():
    x = make_values((37, 48), torch.bfloat16, "heavy", 1)
    w = make_values((32, 48), torch.bfloat16, "heavy", 2)
    calls = [("quantize_row_col", x, (x, 0x0F0F, True, True, False, True, 1, 2, 3, None, None,
                                      v, rv, cv))
             for v in range(len(extension.CUDA_VARIANTS["quantize_row_col"]))
             for rv, cv in MODES] + [
        ("quantize_row_col", x, (x, -1, True, False, False, False, 0, 0, 0, None, None, 0,
                                 True, True)),
        ("quantize_row_col", x, (x, -1, False, True, False, False, 0, 0, 0, None, None, 0,
                                 True, True)),
        ("quantize_weight_2d", w, (w, False, True, 0, 0, None, 1, True)),
        ("quantize_weight_2d", w, (w, False, False, 0, 0, None, 0, False))]
    for op, real_in, args in calls:
        fn = getattr(torch.ops.lowprec_C, op)
        real = fn(*args)
        with FakeTensorMode() as mode:
            fake_in = mode.from_tensor(real_in)
            fake = fn(fake_in, *args[1:])
        assert [(t.shape, t.dtype) for t in fake] == [(t.shape, t.dtype) for t in real], args


def test_launch_table_takes_the_values_arguments():
    """launch_trace.CUDA_EXTENSION_LAUNCHES takes the op arguments positionally: values
    mode launches the packed mode's kernels."""
    x = torch.empty(64, 32)
    row_col = launch_trace.CUDA_EXTENSION_LAUNCHES["lowprec_C::quantize_row_col"]
    weight = launch_trace.CUDA_EXTENSION_LAUNCHES["lowprec_C::quantize_weight_2d"]
    for amax in (None, torch.ones(())):
        packed = row_col(x, -1, True, True, False, False, 0, 0, 0, amax, amax)
        assert row_col(x, -1, True, True, False, False, 0, 0, 0, amax, amax, 2, True,
                       False) == packed
        assert row_col(x, -1, True, True, False, False, 0, 0, 0, amax, amax, 0, True,
                       True) == packed
        assert weight(x, False, False, 0, 0, amax, 1, True) == weight(x, False, False, 0, 0,
                                                                      amax)

    def step():
        x = torch.empty(8192, 1024, dtype=torch.bfloat16)
        extension.quantize_row_col(x, rht_signs=S, row_values=True, col_values=True, variant=1)
        extension.quantize_weight_2d(x[:4096], columnwise=False, values=True)
    trace = launch_trace.trace(step)
    assert trace.by_kernel() == {"cuda:amax": 2, "cuda:quantize_row_col": 1,
                                 "cuda:quantize_weight_2d": 1}
    # The values copies' bytes: bf16 [8192, 1024] and [1024, 8192], read x once.
    row_col_bytes = trace.launches[1].nbytes
    assert row_col_bytes >= 3 * 8192 * 1024 * 2


def test_cuda_backend_declares_values_mode():
    from lowprec.backends import cuda
    assert cuda.QUANTIZE_VALUES is True
    assert cuda.quantize_row_col is extension.quantize_row_col
    assert cuda.quantize_weight_2d is extension.quantize_weight_2d


# ----------------------------------------------------------------------------------
# The CUDA kernels' values stores, in the simulator (every variant)
# ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim():
    return build_sim()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stochastic", [False, True])
def test_sim_1x16_and_16x16_values_every_variant(sim, dtype, stochastic):
    x = finite_specials(dtype, rows=48)
    seed, offset = 2 ** 64 - 3, 2 ** 32 - 5
    cases = [(1, v, S) for v in extension.CUDA_VARIANTS["quantize_nvfp4"].values()] + [
        (16, v, None) for v in extension.CUDA_VARIANTS["quantize_weight_2d"].values()]
    for block_rows, variant, signs in cases:
        block = "16x16" if block_rows == 16 else "1x16"
        kwargs = dict(rht_signs=signs, stochastic=stochastic, seed=seed, offset=offset)
        got, _ = sim_quantize(sim, x, block_rows=block_rows, variant=variant, values=True,
                              **kwargs)
        packed = R.quantize_nvfp4(x, block=block, **kwargs)
        assert_values_of(got, packed, f"{block} variant {variant}")
    # The rowwise-only quantize_row_col of the CUDA op runs the 1x16 kernel.
    got, _ = sim_quantize(sim, x, values=True, stochastic=stochastic, seed=seed, offset=offset)
    assert_bits_equal(got, extension.quantize_row_col(x, columnwise=False, row_values=True,
                                                      row_stochastic=stochastic, seed=seed,
                                                      row_offset=offset)[0], "1x16 vs CPU op")
    w, _ = sim_quantize(sim, x, block_rows=16, values=True, stochastic=stochastic, seed=seed,
                        offset=offset)
    assert_bits_equal(w, extension.quantize_weight_2d(x, columnwise=False, values=True,
                                                      stochastic=stochastic, seed=seed,
                                                      offset=offset)[0], "16x16 vs CPU op")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES[:3])
def test_sim_fused_values_every_variant(sim, dtype, mode):
    """[70, 160] (partial tiles both ways, odd padding) with special values; SR on the
    columnwise copy, RNE on the rowwise one."""
    x = make_values((70, 160), dtype, "grid", 4)
    x[:37, :64] = finite_specials(dtype)
    x[40:50] = make_values((10, 160), dtype, "underflow_blocks", 5)
    row_values, col_values = mode
    kwargs = dict(rht_signs=S, row_sr=False, col_sr=True, seed=77, row_offset=2 ** 64 - 1,
                  col_offset=12345, row_amax=None, col_amax=None)
    want_row, want_col = R.quantize_row_col(x, rht_signs=S, col_stochastic=True, seed=77,
                                            row_offset=2 ** 64 - 1, col_offset=12345,
                                            row_values=row_values, col_values=col_values)
    for name, variant in extension.CUDA_VARIANTS["quantize_row_col"].items():
        row, col = sim_rowcol(sim, x, rowwise=True, variant=variant, row_values=row_values,
                              col_values=col_values, **kwargs)
        assert_bits_equal(row, want_row, f"fused {name}, rowwise")
        assert_bits_equal(col, want_col, f"fused {name}, columnwise")


@SIM_SETTINGS
@given(x=float_tensors(min_rows=1, max_rows=100, max_k=144, specials=True),
       signs=st.sampled_from([None, S]), rowwise=st.booleans(), mode=st.sampled_from(MODES[:3]),
       row_sr=st.booleans(), col_sr=st.booleans(), seed=UINT64, row_offset=UINT64,
       col_offset=UINT64, row_amax=AMAXES, col_amax=AMAXES,
       variant=st.sampled_from(sorted(extension.CUDA_VARIANTS["quantize_row_col"].values())))
def test_sim_fused_values_equal_reference(sim, x, signs, rowwise, mode, row_sr, col_sr, seed,
                                          row_offset, col_offset, row_amax, col_amax, variant):
    if x.shape[-1] == 0:
        return
    row_values, col_values = mode
    row, col = sim_rowcol(sim, x, rht_signs=signs, rowwise=rowwise, row_sr=row_sr,
                          col_sr=col_sr, seed=seed, row_offset=row_offset,
                          col_offset=col_offset, row_amax=_amax(row_amax),
                          col_amax=_amax(col_amax), variant=variant, row_values=row_values,
                          col_values=col_values)
    if rowwise:
        packed = R.quantize_nvfp4(x.reshape(-1, x.shape[-1]), stochastic=row_sr, seed=seed,
                                  offset=row_offset, amax=_amax(row_amax))
        want = R.as_values(packed) if row_values else packed
        assert_bits_equal(row, want, "fused, rowwise")
    packed = R.quantize_nvfp4(padded_transpose(x), rht_signs=signs, stochastic=col_sr,
                              seed=seed, offset=col_offset, amax=_amax(col_amax))
    assert_bits_equal(col, R.as_values(packed) if col_values else packed, "fused, columnwise")


# ----------------------------------------------------------------------------------
# On a GPU (`pytest -m gpu`): the CUDA ops' values equal the CPU build's
# ----------------------------------------------------------------------------------

def _cpu(triple):
    return tuple(t.cpu() for t in triple)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(8192 + 7, 1024 + 16), (3, 256, 2048 - 16)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("sr", [False, True])
def test_cuda_values_every_variant_on_the_gpu(shape, dtype, sr):
    reason = _C.cuda_reason()
    if reason is not None:
        pytest.skip(f"cuda backend unavailable: {reason}")
    x = make_values(shape, dtype, "heavy", 5)
    x.view(-1)[::997] = 0.0
    x.view(-1)[1::991] = -0.0
    rc = dict(rht_signs=S, row_stochastic=sr, col_stochastic=sr, seed=123, row_offset=5,
              col_offset=2 ** 40)
    for row_values, col_values in MODES[:3]:
        c_row, c_col = extension.quantize_row_col(x, row_values=row_values,
                                                  col_values=col_values, **rc)
        for name, variant in extension.CUDA_VARIANTS["quantize_row_col"].items():
            row, col = extension.quantize_row_col(x.cuda(), variant=variant, row_values=row_values,
                                                  col_values=col_values, **rc)
            assert_bits_equal(_cpu(row), c_row, f"{name} rowwise ({row_values})")
            assert_bits_equal(_cpu(col), c_col, f"{name} columnwise ({col_values})")
    c_row, _ = extension.quantize_row_col(x, columnwise=False, row_values=True, **rc)
    row, _ = extension.quantize_row_col(x.cuda(), columnwise=False, row_values=True, **rc)
    assert_bits_equal(_cpu(row), c_row, "rowwise only (the 1x16 kernel)")
    w = x.reshape(-1, x.shape[-1])[:4096]
    c_w, _ = extension.quantize_weight_2d(w, columnwise=False, values=True, stochastic=sr, seed=9)
    for name, variant in extension.CUDA_VARIANTS["quantize_weight_2d"].items():
        got, _ = extension.quantize_weight_2d(w.cuda(), columnwise=False, values=True,
                                              stochastic=sr, seed=9, variant=variant)
        assert_bits_equal(_cpu(got), c_w, f"quantize_weight_2d {name} values")
