"""backend="triton" through the public API, availability reasons, and the custom ops."""

import pytest
import torch

import lowprec
from lowprec import reference as R
from lowprec.kernels import backend


def test_availability(device):
    assert backend.availability(device) is None
    assert lowprec.available("triton", device_type=device)
    assert "do not run on" in backend.availability("mps")


QUANTIZE_OPTIONS = [
    {},
    {"rht": True},
    {"rht": True, "sign_vector": [-1] * 8 + [1] * 8, "stochastic": True, "seed": 2**64 - 1,
     "offset": 2**63},
    {"block": "16x16"},
    {"block": "16x16", "stochastic": True, "seed": 5, "offset": 2**40},
    {"stochastic": True, "seed": 5, "amax": 1.5},
    {"rht": True, "amax": 0.75},
]


@pytest.mark.parametrize("options", QUANTIZE_OPTIONS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_quantize_nvfp4(device, same_bits, options, dtype):
    x = torch.randn(3, 48, 64, generator=torch.Generator().manual_seed(0)).to(dtype)
    got = lowprec.quantize_nvfp4(x.to(device), backend="triton", **options)
    want = lowprec.quantize_nvfp4(x, backend="reference", **options)
    assert got.shape == want.shape and got.rht_signs == want.rht_signs
    same_bits(got.data, want.data)
    same_bits(got.scale, want.scale)
    same_bits(got.amax, want.amax)


def test_quantize_nvfp4_rht_non_contiguous(device, same_bits):
    """RHT along K reads x transposed inside the op: any input layout gives the same bits."""
    x = torch.randn(64, 96, generator=torch.Generator().manual_seed(1))
    view = x.to(device).t()[16:80].t()
    got = lowprec.quantize_nvfp4(view, rht=True, stochastic=True, seed=3, backend="triton")
    want = lowprec.quantize_nvfp4(x.t()[16:80].t(), rht=True, stochastic=True, seed=3,
                                  backend="reference")
    same_bits(got.data, want.data)
    same_bits(got.scale, want.scale)


def test_quantize_fp8(device, same_bits):
    x = torch.randn(2, 24, 80).to(torch.bfloat16)
    got = lowprec.quantize_fp8(x.to(device), backend="triton")
    want = lowprec.quantize_fp8(x, backend="reference")
    same_bits(got.data, want.data)
    same_bits(got.scale, want.scale)
    out = lowprec.fp8_gemm(got, lowprec.quantize_fp8(torch.randn(32, 80).to(device),
                                                     backend="triton"), backend="triton")
    assert out.shape == (2, 24, 32) and out.dtype == torch.bfloat16


def test_empty_input(device):
    t = lowprec.quantize_nvfp4(torch.zeros(0, 32, device=device), backend="triton")
    assert t.data.shape == (0, 16) and t.amax.item() == 0
    t = lowprec.quantize_nvfp4(torch.zeros(0, 32, device=device), amax=float("inf"),
                               backend="triton")
    assert torch.isnan(t.amax)


def sample_args(device):
    x = torch.randn(32, 64, device=device, dtype=torch.bfloat16)
    q = R.quantize_nvfp4(x.cpu())
    qd = [t.to(device) for t in q]
    f8 = [t.to(device) for t in R.quantize_fp8_rowwise(x.cpu())]
    return {
        "triton_quantize_nvfp4": (x, "1x16", list(R.DEFAULT_SIGN_VECTOR), True, -5, 7, None),
        "triton_quantize_row_col": (x, list(R.DEFAULT_SIGN_VECTOR), True, True, True, False,
                                    3, 0, 2**62, None, None),
        "triton_quantize_weight_2d": (x, True, False, 0, 0, None),
        "triton_dequantize_nvfp4": (*qd, torch.bfloat16),
        "triton_quantize_fp8": (x,),
        "triton_nvfp4_gemm": (*qd, *qd, None, torch.float32),
        "triton_fp8_gemm": (*f8, *f8, None, torch.float32),
    }


@pytest.mark.parametrize("name", sorted(sample_args("cpu")))
def test_custom_op_registration(device, name):
    """Schema, fake (meta) implementation and dispatch of each op (torch.library.opcheck)."""
    op = getattr(torch.ops.lowprec, name)
    args = sample_args(device)[name]
    checks = ("test_faketensor", "test_autograd_registration")
    # opcheck's schema test multiplies tensor inputs, which torch does not do for fp8.
    if not any(isinstance(a, torch.Tensor) and a.dtype == torch.float8_e4m3fn for a in args):
        checks = ("test_schema",) + checks
    torch.library.opcheck(op, args, test_utils=checks)


def test_seed_and_offset_map_onto_int64():
    """The backends' uint64 <-> int64 mapping (lowprec.checks), values written by hand."""
    from lowprec.checks import as_int64, as_uint64
    assert as_int64(2**64 - 1) == -1
    assert as_int64(2**63) == -(2**63)
    assert as_int64(5) == 5
    assert as_uint64(-1) == 2**64 - 1 and as_uint64(-(2**63)) == 2**63
    assert as_uint64(2**64 + 3) == 3


def test_16x16_with_rht_signs_is_refused_below_ops(device):
    """The Triton op used to drop the signs of a 16x16 quantization and return plain codes;
    called directly (bypassing ops.py), it now refuses."""
    with pytest.raises(ValueError, match="16x16' with rht_signs is not supported"):
        backend.quantize_nvfp4(torch.randn(16, 32, device=device), block="16x16",
                               rht_signs=R.DEFAULT_SIGN_VECTOR)
