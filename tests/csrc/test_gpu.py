"""On a GPU (`pytest -m gpu`): cuda == triton == reference, bit for bit, at large shapes.

The expected bits come from CPU copies of the inputs (the CPU is where the reference's
NaN conventions are defined, see lowprec/reference.py): from the reference itself on the
small shapes, and from the CPU build of the same C++ (which the CPU tests prove equal to
the reference) on the large ones, where the reference would take minutes. Sanitizer run
on these shapes:
`compute-sanitizer --tool memcheck python -m pytest -m gpu tests/csrc/test_gpu.py`.
"""

import pytest
import torch
from csrc_helpers import assert_bits_equal, make_values

from lowprec import _C
from lowprec import reference as R
from lowprec.backends import extension

pytestmark = pytest.mark.gpu

SHAPES = [(4096, 4096), (8192 + 7, 1024 + 16), (3, 256, 2048 - 16), (17, 48)]
S = R.DEFAULT_SIGN_VECTOR


@pytest.fixture(scope="module")
def cuda_backend():
    reason = _C.cuda_reason()
    if reason is not None:
        pytest.skip(f"cuda backend unavailable: {reason}")
    from lowprec.backends import cuda
    return cuda


@pytest.fixture(scope="module")
def triton_backend():
    from lowprec import backends
    reason = backends.reason_unavailable("triton", "cuda")
    if reason is not None:
        pytest.skip(f"triton backend unavailable: {reason}")
    from lowprec.kernels import backend
    return backend


def cpu(triple):
    return tuple(t.cpu() for t in triple)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
@pytest.mark.parametrize("variant", [
    dict(), dict(stochastic=True, seed=2 ** 64 - 3, offset=2 ** 32 - 5),
    dict(rht_signs=S), dict(rht_signs=S, stochastic=True, seed=7, offset=11),
    dict(amax=torch.tensor(3.5)), dict(block="16x16")])
def test_quantize_cuda_equals_reference_and_triton(cuda_backend, triton_backend, shape, dtype,
                                                   variant):
    if variant.get("block") == "16x16" and shape[-2] % 16:
        pytest.skip("16x16 needs rows % 16 == 0")
    x = make_values(shape, dtype, "heavy", 0)
    x.view(-1)[::997] = 0.0
    small = x.numel() <= 1 << 16
    expected = R.quantize_nvfp4(x, **variant) if small else extension.quantize_nvfp4(x, **variant)
    device_variant = dict(variant)
    if "amax" in variant:
        device_variant["amax"] = variant["amax"].cuda()
    got = cuda_backend.quantize_nvfp4(x.cuda(), **device_variant)
    assert_bits_equal(cpu(got), expected, f"cuda {variant}")
    assert_bits_equal(cpu(triton_backend.quantize_nvfp4(x.cuda(), **device_variant)), expected,
                      f"triton {variant}")


@pytest.mark.parametrize("shape", [(8192, 4096), (1000, 1024), (33, 64), (4, 1000, 512)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("sr", [False, True])
def test_rowwise_columnwise_cuda_equals_triton_and_reference(cuda_backend, triton_backend, shape,
                                                             dtype, sr):
    x = make_values(shape, dtype, "heavy", 1)
    kwargs = dict(rht_signs=S, row_stochastic=sr, col_stochastic=sr, seed=123, row_offset=5)
    row, col = cuda_backend.quantize_row_col(x.cuda(), **kwargs)
    t_row, t_col = triton_backend.quantize_row_col(x.cuda(), **kwargs)
    c_row, c_col = extension.quantize_row_col(x, **kwargs)  # CPU build == reference
    assert_bits_equal(cpu(row), c_row, "cuda rowwise")
    assert_bits_equal(cpu(col), c_col, "cuda columnwise")
    assert_bits_equal(cpu(t_row), c_row, "triton rowwise")
    assert_bits_equal(cpu(t_col), c_col, "triton columnwise")
    if x.numel() <= 1 << 16:
        x2 = x.reshape(-1, x.shape[-1])
        assert_bits_equal(c_row, R.quantize_nvfp4(x2, stochastic=sr, seed=123, offset=5))


@pytest.mark.parametrize("shape", [(4096, 4096), (3072, 1024 + 16)])
def test_weight_2d_cuda_equals_triton_and_cpu(cuda_backend, triton_backend, shape):
    w = make_values(shape, torch.bfloat16, "heavy", 2)
    row, col = cuda_backend.quantize_weight_2d(w.cuda())
    t_row, t_col = triton_backend.quantize_weight_2d(w.cuda())
    c_row, c_col = extension.quantize_weight_2d(w)
    for got in ((row, col), (t_row, t_col)):
        assert_bits_equal(cpu(got[0]), c_row, "2-D rowwise")
        assert_bits_equal(cpu(got[1]), c_col, "2-D columnwise")


def test_nan_input_gives_nan_scales_everywhere(cuda_backend):
    x = torch.randn(256, 256, device="cuda")
    x[7, 9] = float("nan")
    data, scale, amax = cuda_backend.quantize_nvfp4(x)
    assert torch.isnan(amax)
    assert (scale.view(torch.uint8) == 0x7F).all()
