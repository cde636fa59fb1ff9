"""Both FP8 layouts of an operand in two launches (``kernels.fp8.quantize_fp8_row_col``).

``quantize_fp8_row_col(x)`` must give, bit for bit, the reference's ``quantize_fp8(x)``
(rowwise, along K) and ``quantize_fp8(x.t().contiguous())`` (x^T rowwise, along M): codes
compared as bytes, scales as FP32 bits. Under the interpreter its tiles are smaller than
the shapes here, so every test walks several row tiles, K blocks and column stripes, and
partial ones; one test runs the GPU's tiles. Mutations tried: the columnwise codes
encoded with the row scales, and the column-scale kernel's stripe offset dropped (both
fail the equality tests); the columnwise codes stored untransposed (fails).
"""

import pytest
import torch

from lowprec import backends, launch_trace
from lowprec import reference as R
from lowprec.kernels import fp8 as fp8_kernels
from lowprec.kernels.fp8 import quantize_fp8_row_col

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def sample(shape, dtype, seed):
    """Values over many binades, a zero row and a zero column where there is room."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(
        torch.randint(-12, 12, shape, generator=g).float())
    if shape[0] > 2 and shape[1] > 2:
        x[1] = 0.0                                          # zero row: row scale 1
        x[:, 2] = 0.0                                       # zero column: column scale 1
    return x.to(dtype)


def want(x):
    """The reference's two calls, on a CPU copy."""
    x = x.cpu()
    return (*R.quantize_fp8_rowwise(x), *R.quantize_fp8_rowwise(x.t().contiguous()))


def check(got, x, same_bits):
    m, k = x.shape
    shapes = [(m, k), (m, 1), (k, m), (k, 1)]
    dtypes = [torch.float8_e4m3fn, torch.float32, torch.float8_e4m3fn, torch.float32]
    assert [tuple(t.shape) for t in got] == shapes
    assert [t.dtype for t in got] == dtypes
    for g, w in zip(got, want(x)):
        same_bits(g, w)                       # float8 as uint8 bytes, FP32 scales as int32


@pytest.mark.parametrize("shape,dtype", [
    ((70, 150), "f32"), ((100, 200), "bf16"), ((33, 65), "f16"),   # odd, several tiles
    ((5, 300), "bf16"),                                             # M < the row tile
    ((64, 128), "f32"),                                             # multiples of the tiles
    ((1, 77), "f32"), ((77, 1), "bf16"), ((1, 1), "f16"),
])
def test_matches_reference(device, same_bits, shape, dtype):
    x = sample(shape, DTYPES[dtype], seed=shape[0] * 1000 + shape[1])
    check(quantize_fp8_row_col(x.to(device)), x, same_bits)


@pytest.mark.parametrize("shape", [(0, 7), (7, 0), (0, 0)])
def test_empty(device, same_bits, shape):
    """No elements: zero-size codes; a row (or column) that exists gets scale 1."""
    x = torch.zeros(shape, dtype=torch.bfloat16)
    got = quantize_fp8_row_col(x.to(device))
    check(got, x, same_bits)
    assert torch.equal(got[1].cpu(), torch.ones(shape[0], 1))
    assert torch.equal(got[3].cpu(), torch.ones(shape[1], 1))


@pytest.mark.parametrize("layout", ["transposed", "sliced", "broadcast"])
def test_strided_input(device, same_bits, layout):
    """Any strides, read in place: a transposed view, a slice with a row stride and a
    column step, a stride-0 broadcast (what autograd may hand over)."""
    base = sample((90, 130), torch.bfloat16, seed=3).to(device)
    x = {"transposed": lambda: base.t(),
         "sliced": lambda: base[3:80, 1::2],
         "broadcast": lambda: base[5].expand(40, 130)}[layout]()
    assert not x.is_contiguous()
    check(quantize_fp8_row_col(x), x, same_bits)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_special_values(device, same_bits, dtype):
    """NaN, +-Inf, -0.0 and subnormals of the input type, in rows and columns that hold
    them with ordinary values (NaN/Inf scales, Inf / Inf, -0.0 codes, all-(-0.0) lines)."""
    dt = DTYPES[dtype]
    x = sample((40, 70), torch.float32, seed=7)
    tiny = {torch.float32: 1e-40, torch.bfloat16: 1e-39, torch.float16: 6e-8}[dt]
    x[0, :8] = torch.tensor([float("nan"), 1.0, -0.0, float("inf"), -float("inf"), tiny,
                             -tiny, 0.0])
    x[3, 9] = float("nan")                        # NaN in a row and a column of its own
    x[4, 10] = -float("inf")                      # Inf amax: scale Inf, Inf / Inf = NaN
    x[5, 11] = float("inf")
    x[6] = -0.0                                   # a row of -0.0: scale 1, codes 0x80
    x[:, 12] = -0.0                               # a column of -0.0
    x[:, 13] = tiny                               # a column of subnormals only
    x[7, 14:20] = torch.tensor([tiny, -tiny, 3 * tiny, 0.0, -0.0, tiny])
    x[8] = tiny                                   # a row of subnormals only
    x = x.to(dt)
    check(quantize_fp8_row_col(x.to(device)), x, same_bits)


def test_gpu_tiles(device, same_bits, monkeypatch):
    """The GPU's tile sizes, run by the interpreter: the same bits."""
    gpu = ((512, 16), (32, 128), (8, 4))
    monkeypatch.setattr(fp8_kernels, "row_col_blocks", lambda m, k: gpu)
    x = sample((100, 300), torch.bfloat16, seed=11)
    x[0, 0] = float("nan")
    check(quantize_fp8_row_col(x.to(device)), x, same_bits)


@pytest.mark.parametrize("backend", ["triton", "cpu", "reference"])
def test_backends(device, same_bits, backend):
    """The registry's op on each backend that runs here: the reference's bits."""
    if backends.reason_unavailable(backend, device) is not None:
        pytest.skip(backends.reason_unavailable(backend, device))
    x = sample((50, 90), torch.float16, seed=13)
    fn = backends.get(backend, "quantize_fp8_row_col", device)
    check(fn(x.to(device)), x, same_bits)


def test_custom_op_registration(device):
    """Schema, fake implementation and dispatch (torch.library.opcheck)."""
    x = torch.randn(24, 40, device=device, dtype=torch.bfloat16)
    torch.library.opcheck(torch.ops.lowprec.triton_quantize_fp8_row_col, (x,),
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration"))


M, K = 8192, 1024


def traced(step):
    def setup():
        return torch.empty(M, K, dtype=torch.bfloat16)
    return launch_trace.trace(step, setup, capability=(9, 0))


def test_two_launches_and_fewer_bytes_than_quantize_transpose_quantize():
    """At a real activation (8192 x 1024 bf16, traced on fake tensors): the column scales
    and the fused encoding, nothing else (no fill, no copy); X read twice, both copies
    written once. The old way (quantize, transposed copy, quantize) takes 3 launches."""
    from lowprec.kernels import backend as triton_backend
    new = traced(lambda x: triton_backend.quantize_fp8_row_col(x))
    assert new.by_kernel() == {"triton:_column_scale_kernel": 1,
                               "triton:_quantize_fp8_row_col_kernel": 1}
    x_bytes, codes, scales = M * K * 2, M * K, 4 * (M + K)
    # Each launch: its tensor arguments once (x, the column scales; then x, both codes,
    # both scales).
    assert new.launches[0].nbytes == x_bytes + 4 * K
    assert new.launches[1].nbytes == x_bytes + 2 * codes + scales
    assert new.host_syncs == 0

    old = traced(lambda x: (triton_backend.quantize_fp8(x),
                            triton_backend.quantize_fp8(x.t().contiguous())))
    assert old.count == 3, old.by_kernel()
    assert new.nbytes < old.nbytes - x_bytes             # at least the copy's write saved
