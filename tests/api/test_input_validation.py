"""Op-level input validation: every bad argument is refused before use, by a message that
names the value (ops.py). Each case below went through silently before the checks
existed (negative scales, a NaN cast to -2147483648, True read as +1, ...)."""

import numpy as np
import pytest
import torch

import lowprec

X = torch.randn(32, 32)


@pytest.mark.parametrize("amax", [-1.0, torch.tensor(-0.5), float("-inf")])
def test_negative_amax_is_refused(amax):
    with pytest.raises(ValueError, match="amax must be >= 0"):
        lowprec.quantize_nvfp4(X, amax=amax, backend="reference")


@pytest.mark.parametrize("amax", [0.0, 3.0, torch.tensor([2.0]), float("nan"), float("inf")])
def test_zero_positive_and_non_finite_amax_pass(amax):
    q = lowprec.quantize_nvfp4(X, amax=amax, backend="reference")
    assert q.amax.dtype == torch.float32


@pytest.mark.parametrize("amax", ["3", [1.0, 2.0], True])
def test_amax_of_the_wrong_kind(amax):
    with pytest.raises((TypeError, ValueError), match="amax"):
        lowprec.quantize_nvfp4(X, amax=amax, backend="reference")


BAD_SIGNS = {
    "bools": [True] * 16,
    "bool tensor": torch.ones(16, dtype=torch.bool),
    "nested": [[1] * 8, [1] * 8],
    "2-d tensor": torch.ones(2, 8),
    "string": "1" * 16,
    "string of signs": "+" * 16,
    "too short": [1] * 15,
    "zero": [1] * 15 + [0],
    "set": set(range(16)),
}


@pytest.mark.parametrize("rht", [True, False])
@pytest.mark.parametrize("name", sorted(BAD_SIGNS))
def test_bad_sign_vector_is_refused_with_or_without_rht(name, rht):
    with pytest.raises(ValueError, match="sign_vector must be 16 entries"):
        lowprec.quantize_nvfp4(X, rht=rht, sign_vector=BAD_SIGNS[name], backend="reference")
    with pytest.raises(ValueError, match="sign_vector must be 16 entries"):
        lowprec.quantize_row_col(X, rht=rht, sign_vector=BAD_SIGNS[name], backend="reference")


@pytest.mark.parametrize("signs", [[1, -1] * 8, tuple([-1] * 16), torch.tensor([1, -1] * 8),
                                   [np.int64(1)] * 16])
def test_good_sign_vectors(signs):
    q = lowprec.quantize_nvfp4(X, rht=True, sign_vector=signs, backend="reference")
    assert q.rht_signs == tuple(int(s) for s in signs)


def test_rht_with_16x16_blocks_is_refused_on_every_backend():
    """The triton backend used to quantize it without the RHT and stamp the signs anyway;
    the combination is now refused in ops.py, before any backend runs."""
    for backend in lowprec.available():
        with pytest.raises(ValueError, match="16x16.*rht=True is not supported"):
            lowprec.quantize_nvfp4(X, block="16x16", rht=True, backend=backend)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool,
                                   torch.float8_e4m3fn, "float32", None])
def test_non_float_output_dtypes(dtype):
    q = lowprec.quantize_nvfp4(X, backend="reference")
    with pytest.raises(TypeError, match="dtype must be one of float32"):
        lowprec.dequantize_nvfp4(q, dtype, backend="reference")
    with pytest.raises(TypeError, match="out_dtype must be one of float32"):
        lowprec.nvfp4_gemm(q, q, out_dtype=dtype, backend="reference")
    f = lowprec.quantize_fp8(X, backend="reference")
    with pytest.raises(TypeError, match="out_dtype must be one of float32"):
        lowprec.fp8_gemm(f, f, out_dtype=dtype, backend="reference")


def test_gemm_operands_on_different_devices():
    """CPU and meta tensors stand in for two devices (no GPU needed)."""
    q = lowprec.quantize_nvfp4(X, backend="reference")
    meta = lowprec.NVFP4Tensor(q.data.to("meta"), q.scale.to("meta"), q.amax.to("meta"),
                               q.shape)
    with pytest.raises(ValueError, match="one device; got a on cpu, b on meta"):
        lowprec.nvfp4_gemm(q, meta, backend="reference")
    f = lowprec.quantize_fp8(X, backend="reference")
    f_meta = lowprec.FP8Tensor(f.data.to("meta"), f.scale.to("meta"), f.shape)
    with pytest.raises(ValueError, match="one device; got a on meta, b on cpu"):
        lowprec.fp8_gemm(f_meta, f, backend="reference")
    with pytest.raises(ValueError, match="bias must be on the operands' device cpu"):
        lowprec.nvfp4_gemm(q, q, bias=torch.zeros(32, device="meta"), backend="reference")


@pytest.mark.parametrize("bias, error, match", [
    (torch.zeros(32, dtype=torch.int64), TypeError, "bias must be float32.*torch.int64"),
    (torch.zeros(32, dtype=torch.bool), TypeError, "bias must be float32.*torch.bool"),
    ([0.0] * 32, TypeError, "bias must be a tensor or None; got list"),
    (np.zeros(32, dtype=np.float32), TypeError, "bias must be a tensor or None; got ndarray"),
    (1.0, TypeError, "bias must be a tensor or None; got float"),
])
def test_bad_bias(bias, error, match):
    q = lowprec.quantize_nvfp4(X, backend="reference")
    f = lowprec.quantize_fp8(X, backend="reference")
    with pytest.raises(error, match=match):
        lowprec.nvfp4_gemm(q, q, bias=bias, backend="reference")
    with pytest.raises(error, match=match):
        lowprec.fp8_gemm(f, f, bias=bias, backend="reference")


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_fused_op_checks_signs_the_same_way(backend):
    """quantize_row_col (what lowprec.linear calls) refuses the sign vectors that
    quantize_nvfp4 refuses: both go through lowprec.checks.sign_vector in ops.py."""
    if not lowprec.available(backend, device_type="cpu"):
        pytest.skip(f"{backend} does not run here")
    with pytest.raises(ValueError, match="sign_vector must be 16 entries"):
        lowprec.quantize_row_col(X, rht=True, sign_vector=[True] * 16, backend=backend)