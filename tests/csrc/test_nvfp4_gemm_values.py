"""nvfp4_gemm_values: NUMERICS 8's GEMM on operands the quantizers wrote as bf16 values
(the Hopper emulation's values mode), the extension's op. Here its CPU kernel and its
fake; on a GPU (``-m gpu``) its CUDA kernel, one cuBLASLt call that reads alpha from
device memory (csrc/nvfp4_gemm_values_cuda.cpp), which has not run on a GPU yet. The
kernel that writes alpha runs in the CPU simulator
(tests/csrc/test_cuda_sim.py::test_the_gemm_scalars_kernel_gives_the_references_alpha).

Expected values from the reference: operands quantized by ``lowprec.reference``, their
values made by ``reference.as_values``; the op on those values must give
``reference.nvfp4_gemm`` on the packed copies, bit for bit. On the GPU the operands are
chosen so that every partial sum is exact in FP32: any summation order (NUMERICS 8 lets
backends differ only there) then gives the reference's bits.
Mutation tried: alpha without the second decode scale (the four equality tests fail).
"""

import pytest
import torch
from csrc_helpers import assert_bits_equal, make_values
from torch._subclasses.fake_tensor import FakeTensorMode

from lowprec import _C
from lowprec import reference as R
from lowprec.backends import extension

pytestmark = pytest.mark.skipif(extension.REASON is not None,
                                reason=f"extension unavailable: {extension.REASON}")
OUT_DTYPES = [torch.bfloat16, torch.float32]      # what cuBLASLt writes from bf16


def quantized_pair(m, n, k, seed):
    """Reference NVFP4 copies of A [m, k] (heavy-tailed) and B [n, k]."""
    a = make_values((m, k), torch.float32, "heavy", seed)
    b = make_values((n, k), torch.float32, "normal", seed + 1)
    return R.quantize_nvfp4(a), R.quantize_nvfp4(b)


@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
def test_the_cpu_op_equals_the_reference_gemm_of_the_packed_copies(out_dtype):
    qa, qb = quantized_pair(33, 48, 64, 1)
    va, vb = R.as_values(qa), R.as_values(qb)
    got = extension.nvfp4_gemm_values(va.data, va.amax, vb.data, vb.amax, out_dtype)
    assert_bits_equal(got, R.nvfp4_gemm(*qa, *qb, out_dtype=out_dtype))


def test_b_may_be_a_transposed_view():
    """dgrad multiplies by W's values as the quantizer wrote them, [N, K] read as W^T."""
    qa, qb = quantized_pair(16, 32, 48, 3)
    va, vb = R.as_values(qa), R.as_values(qb)
    b_view = vb.data.t().contiguous().t()               # [32, 48], strides (1, 32)
    assert b_view.stride() == (1, 32)
    assert_bits_equal(extension.nvfp4_gemm_values(va.data, va.amax, b_view, vb.amax),
                      R.nvfp4_gemm(*qa, *qb))


@pytest.mark.parametrize("bad, error, words", [
    (dict(a=torch.zeros(4, 32)), TypeError, "bf16"),
    (dict(b=torch.zeros(8, 16, dtype=torch.bfloat16)), ValueError, "[8, 16]"),
    (dict(a=torch.zeros(4, 0, dtype=torch.bfloat16), b=torch.zeros(8, 0, dtype=torch.bfloat16)),
     ValueError, "K > 0"),
    (dict(a_amax=torch.ones(2)), ValueError, "[2]"),
    (dict(out_dtype=torch.float16), TypeError, "Half"),
])
def test_bad_arguments_are_named(bad, error, words):
    args = dict(a=torch.zeros(4, 32, dtype=torch.bfloat16), a_amax=torch.tensor(1.0),
                b=torch.zeros(8, 32, dtype=torch.bfloat16), b_amax=torch.tensor(1.0),
                out_dtype=torch.bfloat16)
    args.update(bad)
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        extension.nvfp4_gemm_values(args["a"], args["a_amax"], args["b"], args["b_amax"],
                                    args["out_dtype"])


@pytest.mark.parametrize("bias, out_dtype, runs", [
    (None, torch.bfloat16, "cublaslt"), (None, torch.float32, "cublaslt"),
    (torch.zeros(8), torch.bfloat16, "mm_epilogue"), (None, torch.float16, "mm_epilogue")])
def test_the_cuda_backends_entry_takes_cublaslt_where_it_can(monkeypatch, bias, out_dtype, runs):
    """``lowprec.backends.cuda.gemm_values_cublaslt``: a bias, or an fp16 output (cuBLASLt
    writes none from bf16 operands), go to mm + epilogue."""
    from lowprec.backends import cuda
    calls = []
    monkeypatch.setattr(cuda.triton_gemm, "gemm_values",
                        lambda *args, **kwargs: calls.append("mm_epilogue"))
    monkeypatch.setattr(cuda.extension, "nvfp4_gemm_values",
                        lambda *args, **kwargs: calls.append("cublaslt"))
    a, b = torch.zeros(4, 32, dtype=torch.bfloat16), torch.zeros(8, 32, dtype=torch.bfloat16)
    cuda.gemm_values_cublaslt(a, torch.tensor(1.0), b, torch.tensor(1.0), bias, out_dtype)
    assert calls == [runs]


def test_the_fake_gives_the_output_shape_and_dtype():
    with FakeTensorMode():
        a = torch.empty(8192, 1024, dtype=torch.bfloat16)
        b = torch.empty(4096, 1024, dtype=torch.bfloat16)
        out = extension.nvfp4_gemm_values(a, torch.empty(()), b, torch.empty(()),
                                          torch.float32)
    assert out.shape == (8192, 4096) and out.dtype == torch.float32


# ----------------------------------------------------------------------------------
# The CUDA kernel (cuBLASLt), on a GPU
# ----------------------------------------------------------------------------------

def exact_sum_operands(m, n, k, seed, device):
    """Codes of the E2M1 grid with unit block scales (values e2m1, exact), so each product
    is a multiple of 1/4 below 36 and each sum of k of them is exact in FP32 for k < 2^16:
    every summation order gives the same FP32 accumulator. Amaxes chosen to make alpha an
    FP32 value that is not a power of two."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.5, -1, -1.5, -2, -3, -4, -6])
    a = grid[torch.randint(len(grid), (m, k), generator=g)].to(torch.bfloat16)
    b = grid[torch.randint(len(grid), (n, k), generator=g)].to(torch.bfloat16)
    return (a.to(device), torch.tensor(5.0, device=device), b.to(device),
            torch.tensor(0.3, device=device))


@pytest.mark.gpu
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("m, n, k, transposed_b", [
    (8192, 4096, 1024, False), (8192, 1024, 4096, True), (1024, 4096, 8192, False),
    (17, 48, 32, False), (17, 48, 32, True)])
def test_the_cublaslt_kernel_gives_the_cpu_bits(out_dtype, m, n, k, transposed_b):
    reason = _C.cublaslt_reason()
    if reason is not None or not torch.cuda.is_available():
        pytest.skip(reason or "no CUDA GPU")
    a, a_amax, b, b_amax = exact_sum_operands(m, n, k, 7, "cuda")
    if transposed_b:
        b = b.t().contiguous().t()
    # The output's memory, uninitialised, may hold NaNs: beta = 0 comes from device
    # memory, and a GEMM that read C anyway (0 * NaN) would fail here. Freed NaNs of the
    # output's size make the caching allocator hand exactly such memory to the op.
    torch.full((m, n), float("nan"), dtype=out_dtype, device="cuda")     # freed at once
    got = extension.nvfp4_gemm_values(a, a_amax, b, b_amax, out_dtype)
    expected = extension.nvfp4_gemm_values(a.cpu(), a_amax.cpu(), b.cpu(), b_amax.cpu(),
                                           out_dtype)
    assert_bits_equal(got.cpu(), expected)
