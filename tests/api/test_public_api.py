"""The public API: containers, backends, leading dims, empty tensors, errors."""

import pytest
import torch

import lowprec
from lowprec import reference as R


def test_nvfp4_tensor_fields_and_leading_dims():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16)
    q = lowprec.quantize_nvfp4(x)
    assert isinstance(q, lowprec.NVFP4Tensor)
    assert q.data.shape == (2, 3, 32) and q.data.dtype == torch.uint8
    assert q.scale.shape == (2, 3, 4) and q.scale.dtype == torch.float8_e4m3fn
    assert q.amax.shape == () and q.amax.dtype == torch.float32
    assert q.shape == x.shape
    flat = lowprec.quantize_nvfp4(x.reshape(6, 64))
    assert torch.equal(q.data.reshape(6, 32), flat.data)
    assert q.dequantize(torch.bfloat16).dtype == torch.bfloat16
    assert torch.equal(q.dequantize(), lowprec.dequantize_nvfp4(q))


def test_backend_choice():
    x = torch.randn(4, 32)
    ref = lowprec.quantize_nvfp4(x, backend="reference")
    auto = lowprec.quantize_nvfp4(x, backend="auto")
    assert torch.equal(ref.data, auto.data)
    assert lowprec.available("reference") is True
    assert "reference" in lowprec.available()
    reasons = lowprec.available(return_reason=True)
    assert reasons["reference"] is None
    assert set(reasons) >= {"reference", "triton", "cuda", "cpu"}
    with pytest.raises(ValueError, match="unknown backend 'bogus'"):
        lowprec.quantize_nvfp4(x, backend="bogus")


def test_empty_tensors_give_empty_results():
    q = lowprec.quantize_nvfp4(torch.empty(0, 32))
    assert q.data.shape == (0, 16) and q.scale.shape == (0, 2) and q.amax.item() == 0
    assert q.dequantize().shape == (0, 32)
    w = lowprec.quantize_nvfp4(torch.randn(16, 32))
    assert lowprec.nvfp4_gemm(q, w).shape == (0, 16)
    f = lowprec.quantize_fp8(torch.empty(0, 32))
    assert f.data.shape == (0, 32) and f.scale.shape == (0, 1)


@pytest.mark.parametrize("shape", [(4, 20), (4, 8), (3,)])
def test_k_not_a_multiple_of_16(shape):
    with pytest.raises(ValueError, match=r"K % 16 == 0; got shape " + str(shape).replace("(", r"\(")
                       .replace(")", r"\)")):
        lowprec.quantize_nvfp4(torch.randn(shape))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.complex64, torch.float64])
def test_bad_dtypes(dtype):
    x = torch.zeros(4, 32, dtype=dtype)
    with pytest.raises(TypeError, match=str(dtype)):
        lowprec.quantize_nvfp4(x)
    with pytest.raises(TypeError, match=str(dtype)):
        lowprec.quantize_fp8(x)


@pytest.mark.parametrize("signs", [[1] * 15, [1] * 15 + [2], [1] * 15 + [0], [1] * 17])
def test_bad_sign_vector(signs):
    with pytest.raises(ValueError, match="sign_vector must be 16 entries"):
        lowprec.quantize_nvfp4(torch.randn(4, 32), rht=True, sign_vector=signs)


def test_custom_sign_vector_is_used():
    x = torch.randn(4, 32)
    signs = [-1] * 16
    q = lowprec.quantize_nvfp4(x, rht=True, sign_vector=signs)
    assert q.rht_signs == tuple(signs)
    assert torch.equal(q.data, lowprec.quantize_nvfp4(R.rht(x, signs)).data)


def test_2d_rows_not_a_multiple_of_16():
    with pytest.raises(ValueError, match=r"multiple of 16; got shape \(24, 32\)"):
        lowprec.quantize_nvfp4(torch.randn(24, 32), block="16x16")
    with pytest.raises(ValueError, match="block must be one of"):
        lowprec.quantize_nvfp4(torch.randn(16, 32), block="2d")


def test_bad_seed_and_offset():
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\); got -1"):
        lowprec.quantize_nvfp4(torch.randn(4, 32), stochastic=True, seed=-1)
    with pytest.raises(ValueError, match="offset must be"):
        lowprec.quantize_nvfp4(torch.randn(4, 32), stochastic=True, offset=2 ** 64)
    with pytest.raises(TypeError, match="seed must be an int"):
        lowprec.quantize_nvfp4(torch.randn(4, 32), stochastic=True, seed=1.5)


def test_gemm_k_mismatch_and_bias_shape():
    a = lowprec.quantize_nvfp4(torch.randn(4, 32))
    b = lowprec.quantize_nvfp4(torch.randn(16, 48))
    with pytest.raises(ValueError, match=r"K mismatch: a has shape \(4, 32\) \(K=32\), b has "
                                         r"shape \(16, 48\) \(K=48\)"):
        lowprec.nvfp4_gemm(a, b)
    b = lowprec.quantize_nvfp4(torch.randn(16, 32))
    with pytest.raises(ValueError, match=r"bias must have shape \(16,\); got \(8,\)"):
        lowprec.nvfp4_gemm(a, b, bias=torch.zeros(8))
    with pytest.raises(TypeError, match="NVFP4Tensor"):
        lowprec.nvfp4_gemm(a, torch.randn(16, 32))


def test_nan_never_turns_finite():
    x = torch.randn(32, 64, dtype=torch.bfloat16)
    x[5, 7] = float("nan")
    for kwargs in ({}, {"block": "16x16"}, {"rht": True}, {"stochastic": True, "seed": 3}):
        q = lowprec.quantize_nvfp4(x, **kwargs)
        assert torch.isnan(q.dequantize()).all(), kwargs
    assert torch.isnan(lowprec.quantize_fp8(x).dequantize()[5]).all()
