"""backend="cpu" (csrc/quantize_cpu.cpp) equals the reference bit for bit on every
quantize variant: 1x16 RNE and SR, RHT, 16x16 (with its transposed copy), the fused
rowwise + columnwise op, FP8 per row; then the GEMMs, the golden vectors, and the
plumbing (fake kernels, dispatch, errors)."""

import math

import pytest
import torch
from csrc_helpers import UINT64, assert_bits_equal, float_tensors, make_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lowprec
from lowprec import reference as R
from lowprec.backends import cpu as cpu_backend
from lowprec.backends import extension

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SIGNS = st.sampled_from([None, R.DEFAULT_SIGN_VECTOR, (1, -1) * 8])
AMAXES = st.sampled_from([None, 0.0, -0.0, 1e-30, 1.0, 3.0e38, float("inf"), float("nan"),
                          2.0 ** -140])


def amax_tensor(value):
    return None if value is None else torch.tensor(value, dtype=torch.float32)


@SETTINGS
@given(x=float_tensors(), signs=SIGNS, stochastic=st.booleans(), seed=UINT64, offset=UINT64,
       amax=AMAXES)
def test_quantize_1x16_equals_reference(x, signs, stochastic, seed, offset, amax):
    kwargs = dict(rht_signs=signs, stochastic=stochastic, seed=seed, offset=offset,
                  amax=amax_tensor(amax))
    assert_bits_equal(cpu_backend.quantize_nvfp4(x, **kwargs), R.quantize_nvfp4(x, **kwargs), "1x16")


@SETTINGS
@given(x=float_tensors(row_multiple=16, max_rows=48), signs=st.sampled_from([None, R.DEFAULT_SIGN_VECTOR]),
       stochastic=st.booleans(), seed=UINT64, offset=UINT64, amax=AMAXES)
def test_quantize_16x16_equals_reference(x, signs, stochastic, seed, offset, amax):
    kwargs = dict(block="16x16", rht_signs=signs, stochastic=stochastic, seed=seed,
                  offset=offset, amax=amax_tensor(amax))
    assert_bits_equal(cpu_backend.quantize_nvfp4(x, **kwargs), R.quantize_nvfp4(x, **kwargs), "16x16")


def padded_transpose(x):
    """[..., K] -> the [K, M_pad] transpose, zero-padded to 16 rows (NUMERICS 10)."""
    m = 1
    for s in x.shape[:-1]:
        m *= s
    x2 = x.reshape(m, x.shape[-1])
    padded = torch.zeros((m + 15) // 16 * 16, x.shape[-1], dtype=x.dtype)
    padded[:m] = x2
    return padded.T


@SETTINGS
@given(x=float_tensors(), signs=SIGNS, row_sr=st.booleans(), col_sr=st.booleans(), seed=UINT64,
       row_offset=UINT64, col_offset=UINT64, row_amax=AMAXES,
       col_amax=AMAXES, copies=st.sampled_from([(True, True), (True, False), (False, True)]))
def test_rowwise_and_columnwise_equal_reference(x, signs, row_sr, col_sr, seed, row_offset,
                                                col_offset, row_amax, col_amax, copies):
    rowwise, columnwise = copies
    row, col = cpu_backend.quantize_row_col(
        x, rht_signs=signs, row_stochastic=row_sr, col_stochastic=col_sr, seed=seed,
        row_offset=row_offset, col_offset=col_offset, row_amax=amax_tensor(row_amax),
        col_amax=amax_tensor(col_amax), rowwise=rowwise, columnwise=columnwise)
    if rowwise:                                         # rowwise is [M, K]: leading dims flattened
        x2d = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
        assert_bits_equal(row, R.quantize_nvfp4(x2d, stochastic=row_sr, seed=seed, offset=row_offset,
                                         amax=amax_tensor(row_amax)), "rowwise")
    else:
        assert row is None
    if columnwise:
        assert_bits_equal(col, R.quantize_nvfp4(padded_transpose(x), rht_signs=signs,
                                         stochastic=col_sr, seed=seed, offset=col_offset,
                                         amax=amax_tensor(col_amax)), "columnwise")
    else:
        assert col is None


@SETTINGS
@given(x=float_tensors(row_multiple=16, max_rows=48, lead=False), stochastic=st.booleans(),
       seed=UINT64, offset=UINT64, amax=AMAXES, columnwise=st.booleans())
def test_weight_2d_equals_reference_and_its_transpose(x, stochastic, seed, offset, amax,
                                                      columnwise):
    row, col = cpu_backend.quantize_weight_2d(x, columnwise=columnwise, stochastic=stochastic,
                                              seed=seed, offset=offset, amax=amax_tensor(amax))
    assert_bits_equal(row, R.quantize_nvfp4(x, block="16x16", stochastic=stochastic, seed=seed,
                                     offset=offset, amax=amax_tensor(amax)), "2-D rowwise")
    if not columnwise:
        assert col is None
        return
    # NUMERICS 5: the columnwise copy is the exact transpose of codes and tile scales.
    assert torch.equal(R.unpack_codes(col[0]), R.unpack_codes(row[0]).T)
    tile_scales = row[1].view(torch.uint8)[::16]                 # [N/16, K/16]
    assert torch.equal(col[1].view(torch.uint8), tile_scales.T.repeat_interleave(16, 0))
    assert_bits_equal(col[2], row[2], "2-D amax")
    if not stochastic:  # RNE: also what quantizing W^T in 16x16 tiles gives
        assert_bits_equal(col, R.quantize_nvfp4(x.T.contiguous(), block="16x16",
                                         amax=amax_tensor(amax)), "2-D columnwise")


@SETTINGS
@given(x=float_tensors(max_k=64))
def test_fp8_rowwise_equals_reference(x):
    assert_bits_equal(cpu_backend.quantize_fp8(x), R.quantize_fp8_rowwise(x), "fp8")


@pytest.mark.parametrize("case", ["normal_bf16", "zeros_and_underflow_bf16", "ties_f32"])
def test_golden_vectors(golden, case):
    entry = golden["cases"][case]
    x = entry["x"]
    q1 = lowprec.quantize_nvfp4(x, backend="cpu")
    assert torch.equal(q1.amax, entry["amax"])
    assert torch.equal(q1.data, entry["q1d_codes"])
    assert torch.equal(q1.scale.view(torch.uint8), entry["q1d_scales"])
    q2 = lowprec.quantize_nvfp4(x, block="16x16", backend="cpu")
    assert torch.equal(q2.data, entry["q2d_codes"])
    assert torch.equal(q2.scale.view(torch.uint8), entry["q2d_scales"])
    if "rht_values" in entry:
        signs = tuple(golden["sign_vector"].tolist())
        assert torch.equal(torch.ops.lowprec_C.rht(x, extension.sign_mask(signs)),
                           entry["rht_values"])
        qr = lowprec.quantize_nvfp4(x, rht=True, sign_vector=signs, backend="cpu")
        assert torch.equal(qr.amax, entry["rht_amax"])
        assert torch.equal(qr.data, entry["rht_codes"])
        assert torch.equal(qr.scale.view(torch.uint8), entry["rht_scales"])


def test_large_sr_offsets_wrap_like_the_reference():
    """Counters cross 2^32 and 2^64 inside one tensor."""
    x = make_values((64, 256), torch.bfloat16, "heavy", 7)
    for offset in (2 ** 32 - 100, 2 ** 64 - 100):
        kwargs = dict(stochastic=True, seed=2 ** 64 - 3, offset=offset)
        assert_bits_equal(cpu_backend.quantize_nvfp4(x, **kwargs), R.quantize_nvfp4(x, **kwargs), str(offset))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequantize_and_gemm_equal_reference(dtype):
    a = make_values((33, 64), dtype, "heavy", 1)
    b = make_values((48, 64), dtype, "normal", 2)
    qa, qb = R.quantize_nvfp4(a), R.quantize_nvfp4(b)
    bias = torch.randn(48)
    assert_bits_equal(cpu_backend.dequantize_nvfp4(*qa, dtype=dtype), R.dequantize_nvfp4(*qa, dtype=dtype))
    assert_bits_equal(cpu_backend.nvfp4_gemm(*qa, *qb, bias=bias, out_dtype=torch.float32),
               R.nvfp4_gemm(*qa, *qb, bias=bias, out_dtype=torch.float32), "gemm")


def test_nan_block_scales_dequantize_to_nan():
    data = torch.zeros(1, 8, dtype=torch.uint8)
    scale = torch.tensor([[0x7F]], dtype=torch.uint8).view(torch.float8_e4m3fn)
    assert torch.isnan(torch.ops.lowprec_C.block_dequantize_nvfp4(data, scale)).all()


def test_auto_picks_the_cpu_backend_and_available_reports_it():
    assert lowprec.available("cpu", device_type="cpu")
    assert lowprec.available(return_reason=True, device_type="cpu")["cpu"] is None
    from lowprec import backends
    assert backends.get("auto", "quantize_nvfp4", "cpu") is cpu_backend.quantize_nvfp4
    ok, reason = lowprec.available("cuda", return_reason=True, device_type="cuda")
    if not torch.cuda.is_available():
        assert not ok and reason


@pytest.mark.parametrize("x,message", [
    (torch.randn(4, 24), "K % 16 == 0"),
    (torch.randn(4, 32).double(), "float32, bfloat16 or float16"),
])
def test_errors_name_the_value(x, message):
    with pytest.raises((ValueError, TypeError), match=message):
        torch.ops.lowprec_C.quantize_nvfp4(x, 1, -1, False, 0, 0, None)


def test_16x16_needs_row_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        torch.ops.lowprec_C.quantize_nvfp4(torch.randn(20, 32), 16, -1, False, 0, 0, None)


def test_non_contiguous_and_leading_dim_inputs():
    x = make_values((3, 32, 96), torch.bfloat16, "heavy", 3).transpose(0, 1)  # [32, 3, 96] view
    assert_bits_equal(cpu_backend.quantize_nvfp4(x, rht_signs=R.DEFAULT_SIGN_VECTOR),
               R.quantize_nvfp4(x.contiguous(), rht_signs=R.DEFAULT_SIGN_VECTOR))


@pytest.mark.parametrize("op,args", [
    ("quantize_nvfp4", lambda x: (x, 1, 0x1234, True, 5, 7, None)),
    ("quantize_nvfp4", lambda x: (x, 16, -1, False, 0, 0, torch.tensor(2.0))),
    ("quantize_row_col", lambda x: (x, 0x0F0F, True, True, False, True, 1, 2, 3, None, None)),
    ("quantize_row_col", lambda x: (x, -1, False, True, False, False, 1, 2, 3, None, None)),
    ("quantize_weight_2d", lambda x: (x, True, False, 0, 0, None)),
    ("quantize_fp8_rowwise", lambda x: (x,)),
])
def test_fake_kernels_match_the_real_ones(op, args):
    """torch.library.opcheck: the fake (meta) kernels give the real outputs' shapes and dtypes."""
    x = make_values((32, 48), torch.bfloat16, "normal", 0)
    torch.library.opcheck(getattr(torch.ops.lowprec_C, op).default, args(x),
                          test_utils=("test_faketensor",))


def test_block_dequantize_fake_kernel():
    data = torch.randint(0, 256, (5, 8), dtype=torch.uint8)
    scale = torch.randint(0, 127, (5, 1), dtype=torch.uint8).view(torch.float8_e4m3fn)
    torch.library.opcheck(torch.ops.lowprec_C.block_dequantize_nvfp4.default, (data, scale),
                          test_utils=("test_faketensor",))


def test_compiles_without_graph_breaks():
    """A torch.compile trace goes through the ops via their fake kernels."""
    def f(x):
        row, col = cpu_backend.quantize_row_col(
            x, rht_signs=R.DEFAULT_SIGN_VECTOR, seed=1, row_offset=0)
        return row[0], col[1]

    x = make_values((40, 32), torch.bfloat16, "normal", 0)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(x), f(x)):
        assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))
