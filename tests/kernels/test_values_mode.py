"""Values mode of the quantizers: each copy written as its bf16 block-dequantized values.

The oracle: in values mode (``row_values`` / ``col_values`` of ``quantize_row_col``, per
copy; ``values`` of ``quantize_weight_2d``) a copy is ``(values, empty, amax)`` where
``values`` is, bit for bit, ``kernels.dequantize.dequantize(data, scale, None,
torch.bfloat16)`` of the packed copy the same call gives in packed mode (which itself
equals ``lowprec.reference``), ``empty`` a 0-element float8_e4m3fn tensor and ``amax`` the
packed mode's. The reference's values mode gives the same bits. Values mode launches what
packed mode launches (it replaces the GEMM's dequantize launches, adds none).
"""

import pytest
import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import FakeTensorMode

from lowprec import launch_trace
from lowprec import reference as R
from lowprec.kernels import backend
from lowprec.kernels.dequantize import block_value_bits, dequantize

SIGNS = R.DEFAULT_SIGN_VECTOR
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
E4M3 = torch.float8_e4m3fn


def sample(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-6, 7, shape, generator=g))
    return x.to(dtype)


def finite_specials(dtype):
    """-0.0 rows and blocks, all-zero blocks, subnormal inputs, huge values, and blocks
    whose scale underflows E4M3 to 0 (their negative codes dequantize to -0.0)."""
    x = sample((37, 64), torch.float32, seed=21)
    x[0:16, 0:16] = 0.0                                   # all-zero 1x16 and 16x1 blocks
    x[1, 16:32] = -0.0
    x[20:37, 32] = -0.0                                   # a -0.0 column (and its padding)
    x[16, :] = torch.finfo(dtype).max / 2                 # huge: amax, underflowing scales
    tiny = torch.finfo(dtype).tiny / 4 if dtype != torch.float16 else 1e-7
    x[17, :16] = tiny                                     # subnormal inputs
    x[18, 48:64] = -tiny
    x[19, 0:16] = torch.linspace(-1e-3, 1e-3, 16)         # tiny vs amax: scale 0, -0 codes
    return x.to(dtype)


def nonfinite(dtype, which):
    x = finite_specials(dtype).float()
    x[16, :] = 3.0
    x[5, 7] = {"nan": float("nan"), "+inf": float("inf"), "-inf": -float("inf"),
               "-nan": -float("nan")}[which]
    return x.to(dtype)


def oracle(triple):
    """bf16 values of a packed (data, scale, amax) triple: the Triton dequantize, no
    global scale."""
    data, scale, _ = triple
    return dequantize(data, scale, None, torch.bfloat16)


def check_copy(same_bits, got, packed, want_packed):
    """``got`` (values mode) against ``packed`` (the same call, packed mode), which must
    equal the reference's packed triple ``want_packed``."""
    same_bits(packed[0], want_packed[0])
    same_bits(packed[1], want_packed[1])
    same_bits(packed[2].reshape(()), want_packed[2].reshape(()))
    values, empty, amax = got
    assert values.dtype == torch.bfloat16
    assert values.shape == (packed[0].shape[0], 2 * packed[0].shape[1])
    assert empty.dtype == E4M3 and empty.numel() == 0
    same_bits(values, oracle(packed))
    same_bits(values, R.as_values(tuple(t.cpu() for t in want_packed))[0])
    same_bits(amax.reshape(()), packed[2].reshape(()))


@triton.jit
def _value_bits_kernel(codes_ptr, scale_ptr, out_ptr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    codes = tl.load(codes_ptr + i).to(tl.int32)
    scale_bytes = tl.load(scale_ptr + i // 16).to(tl.int32)
    tl.store(out_ptr + i, block_value_bits(codes, scale_bytes).to(tl.int16))


def test_value_bits_every_code_and_scale_byte(device, same_bits):
    """The values-mode decode (``dequantize.block_value_bits``) against the dequantize
    kernel and the reference on all 16 codes x all 256 E4M3 bytes (NaN bytes, negative
    and subnormal scales included)."""
    codes = torch.arange(16, dtype=torch.uint8).repeat(256)                # block r: codes 0..15
    scale = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    out = torch.empty(256 * 16, dtype=torch.int16, device=device)
    _value_bits_kernel[(1,)](codes.to(device), scale.to(device), out, BLOCK=256 * 16)
    data = R.pack_codes(codes.reshape(256, 16))
    e4m3 = scale.view(E4M3).reshape(256, 1)
    want = dequantize(data.to(device), e4m3.to(device), None, torch.bfloat16)
    same_bits(out.reshape(256, 16), want)
    same_bits(out.reshape(256, 16), R.as_values((data, e4m3, None))[0])


def run_row_col(same_bits, x, device, **kwargs):
    packed = backend.quantize_row_col(x.to(device), **kwargs)
    got = backend.quantize_row_col(x.to(device), row_values=True, col_values=True, **kwargs)
    ref_kwargs = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    want = R.quantize_row_col(x, **ref_kwargs)
    want_values = R.quantize_row_col(x, row_values=True, col_values=True, **ref_kwargs)
    for g, p, w, wv in zip(got, packed, want, want_values):
        assert (g is None) == (p is None) == (w is None) == (wv is None)
        if g is not None:
            check_copy(same_bits, g, p, w)
            same_bits(g[0], wv[0])
            assert wv[1].dtype == E4M3 and wv[1].numel() == 0
    # One copy in values mode, the other packed (the training forward: X's rowwise copy
    # as values, X^T packed for the backward): each as in its own mode.
    for row_values in (True, False):
        mixed = backend.quantize_row_col(x.to(device), row_values=row_values,
                                         col_values=not row_values, **kwargs)
        for copy, values, g, p in zip(mixed, (row_values, not row_values), got, packed):
            if copy is not None:
                for t, u in zip(copy, g if values else p):
                    same_bits(t, u)
    return got, packed


ROW_COL_CASES = [
    # (M, K, dtype, rowwise, columnwise, rht, row SR, col SR, seed, row off, col off)
    (64, 128, "f32", True, True, True, False, False, 0, 0, 0),
    (37, 48, "bf16", True, False, False, False, False, 0, 0, 0),          # row only, odd M
    (37, 48, "bf16", False, True, True, False, False, 0, 0, 0),           # col only, RHT
    (33, 64, "f16", True, True, True, True, True, 7, 2**64 - 5, 2**40),   # SR both, wrap
    (50, 32, "bf16", True, True, False, True, False, 0xDEADBEEFCAFEF00D, 2**32 - 3, 0),
    (21, 80, "f32", False, True, False, False, True, 1, 0, 2**63 + 11),   # col SR, no RHT
    (150, 96, "bf16", True, True, True, True, True, 3, 5, 2**33),          # 2 programs in M
]


@pytest.mark.parametrize("m,k,dtype,rowwise,columnwise,rht,row_sr,col_sr,seed,row_off,col_off",
                         ROW_COL_CASES)
def test_row_col_values_equal_dequantized_packed(device, same_bits, m, k, dtype, rowwise,
                                                 columnwise, rht, row_sr, col_sr, seed,
                                                 row_off, col_off):
    x = sample((m, k), DTYPES[dtype], seed=m * k + 1)
    got, _ = run_row_col(same_bits, x, device, rht_signs=SIGNS if rht else None,
                         rowwise=rowwise, columnwise=columnwise, row_stochastic=row_sr,
                         col_stochastic=col_sr, seed=seed, row_offset=row_off,
                         col_offset=col_off)
    m_pad = -(-m // 16) * 16
    if rowwise:
        assert got[0][0].shape == (m, k)
    if columnwise:
        assert got[1][0].shape == (k, m_pad)
        if not rht:     # (the RHT mixes the padding zeros with the chunk's tokens)
            # Padded tokens of a finite tensor hold +0.0 (the dequantized code 0).
            assert (got[1][0][:, m:].cpu().view(torch.int16) == 0).all()


@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_row_col_finite_specials(device, same_bits, dtype, stochastic):
    x = finite_specials(DTYPES[dtype])
    got, packed = run_row_col(same_bits, x, device, rht_signs=SIGNS,
                              row_stochastic=stochastic, col_stochastic=stochastic, seed=9,
                              row_offset=1, col_offset=2**62)
    assert torch.isfinite(got[0][2]) and torch.isfinite(got[1][2])
    row_values = got[0][0].cpu()
    assert (row_values[0, :16].view(torch.int16) == 0).all()               # zero block: +0
    assert (row_values[1, 16:32].view(torch.int16) == -32768).all()        # -0.0 kept
    # Underflowing scales exist (scale byte 0) and give signed zeros.
    assert (packed[0][1].cpu().view(torch.uint8) == 0).any()
    assert (row_values.view(torch.int16) == -32768).sum() > 16


@pytest.mark.parametrize("which", ["nan", "+inf", "-inf", "-nan"])
@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
def test_row_col_nonfinite_input(device, same_bits, dtype, which):
    """A NaN/Inf anywhere: NaN amax, every value the canonical bf16 NaN (padding too)."""
    x = nonfinite(DTYPES[dtype], which)
    got, _ = run_row_col(same_bits, x, device, rht_signs=SIGNS, col_stochastic=True,
                         seed=4, col_offset=3)
    for values, _, amax in got:
        assert torch.isnan(amax)
        assert (values.cpu().view(torch.int16) == 0x7FC0).all()


@pytest.mark.parametrize("which", ["nan", "-inf"])
def test_row_col_nan_blocks_with_given_amax(device, same_bits, which):
    """A finite caller amax with non-finite input: only the blocks holding the NaN/Inf
    are NaN (the canonical NaN blocks); the rest dequantize normally."""
    x = nonfinite(torch.bfloat16, which)
    got, packed = run_row_col(same_bits, x, device, rht_signs=SIGNS,
                              row_amax=torch.tensor(3.0, device=device),
                              col_amax=torch.tensor(40.0, device=device))
    row_values = got[0][0].cpu()
    nan_rows = torch.isnan(row_values.float()).any(dim=1)
    assert nan_rows.tolist() == [r == 5 for r in range(x.shape[0])]
    assert (row_values[5, :16].view(torch.int16) == 0x7FC0).all()
    assert not torch.isnan(row_values[5, 16:].float()).any()
    # Column copy: the NaN chunk of column 7 covers tokens 0..15 of one row.
    col_values = got[1][0].cpu().float()
    assert torch.isnan(col_values).any() and not torch.isnan(col_values).all()


def test_row_col_all_zero_and_empty(device, same_bits):
    x = torch.zeros(20, 32, dtype=torch.bfloat16)
    got, _ = run_row_col(same_bits, x, device, rht_signs=SIGNS)
    assert not got[0][0].float().any() and got[0][2].item() == 0
    empty = torch.zeros(0, 32, dtype=torch.bfloat16, device=device)
    row, col = backend.quantize_row_col(empty, rht_signs=SIGNS, row_values=True,
                                        col_values=True)
    assert row[0].shape == (0, 32) and col[0].shape == (32, 0)
    assert row[2].item() == 0 and col[2].item() == 0


def test_row_col_small_tiles_and_strided_input(device, same_bits):
    """Several programs along both dims (forced 16 x 32 tiles) and a strided view: the
    value stores' masks and offsets, rowwise and transposed."""
    from lowprec.kernels.quantize_row_col import quantize_row_col
    from lowprec.kernels.launches import Launch
    base = sample((45, 200), torch.bfloat16, seed=11).to(device)
    x = base[:, 8:168]                                            # K = 160, row stride 200
    tile = Launch(chunks=1, block_k=32, num_warps=4)
    kwargs = dict(rowwise=True, columnwise=True, rht_signs=SIGNS, row_stochastic=True,
                  col_stochastic=True, seed=17, row_offset=2**40 + 1, col_offset=7)
    packed = quantize_row_col(x, tile=tile, **kwargs)
    got = quantize_row_col(x, tile=tile, row_values=True, col_values=True, **kwargs)
    want = R.quantize_row_col(x.cpu(), rht_signs=SIGNS, row_stochastic=True,
                              col_stochastic=True, seed=17, row_offset=2**40 + 1,
                              col_offset=7)
    for g, p, w in zip(got, packed, want):
        check_copy(same_bits, g, p, w)


WEIGHT_CASES = [(64, 128, "f32", False, 0, 0), (48, 96, "bf16", False, 0, 0),
                (32, 48, "bf16", True, 2**63 + 5, 2**64 - 3), (16, 16, "f32", True, 17, 9),
                (160, 64, "f16", False, 0, 0)]


@pytest.mark.parametrize("n,k,dtype,stochastic,seed,offset", WEIGHT_CASES)
def test_weight_2d_values_equal_dequantized_packed(device, same_bits, n, k, dtype,
                                                   stochastic, seed, offset):
    w = sample((n, k), DTYPES[dtype], seed=n + k)
    kwargs = dict(stochastic=stochastic, seed=seed, offset=offset)
    packed, _ = backend.quantize_weight_2d(w.to(device), columnwise=False, **kwargs)
    got, col = backend.quantize_weight_2d(w.to(device), columnwise=False, values=True,
                                          **kwargs)
    assert col is None
    check_copy(same_bits, got, packed, R.quantize_nvfp4(w, block="16x16", **kwargs))
    want, none = R.quantize_weight_2d(w, columnwise=False, values=True, **kwargs)
    assert none is None
    same_bits(got[0], want[0])
    # W^T's values are exactly the transpose (what the caller uses instead of a copy).
    _, packed_col = backend.quantize_weight_2d(w.to(device), **kwargs)
    same_bits(got[0].t().contiguous(), oracle(packed_col))


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_weight_2d_specials(device, same_bits, dtype):
    w = finite_specials(DTYPES[dtype])[:32]
    for x in (w, nonfinite(DTYPES[dtype], "nan")[:32]):
        packed, _ = backend.quantize_weight_2d(x.to(device), columnwise=False)
        got, _ = backend.quantize_weight_2d(x.to(device), columnwise=False, values=True)
        check_copy(same_bits, got, packed, R.quantize_nvfp4(x, block="16x16"))
    given = torch.tensor(2.0, device=device)                    # finite amax: NaN tiles only
    packed, _ = backend.quantize_weight_2d(x.to(device), columnwise=False, amax=given)
    got, _ = backend.quantize_weight_2d(x.to(device), columnwise=False, amax=given,
                                        values=True)
    check_copy(same_bits, got, packed, R.quantize_nvfp4(x, block="16x16", amax=given.cpu()))
    nan = torch.isnan(got[0].cpu().float())
    assert nan.any() and not nan.all()


def test_weight_2d_values_needs_rowwise_only(device):
    w = torch.ones(16, 16, device=device)
    with pytest.raises(ValueError, match="columnwise=False"):
        backend.quantize_weight_2d(w, values=True)
    with pytest.raises(ValueError, match="columnwise=False"):
        R.quantize_weight_2d(w.cpu(), values=True)


# ----------------------------------------------------------------------------------
# Fake shapes, op registration, launches
# ----------------------------------------------------------------------------------

def _meta(outputs):
    return [None if c is None else [(t.shape, t.dtype) for t in c] for c in outputs]


@pytest.mark.parametrize("rowwise,columnwise", [(True, True), (True, False), (False, True)])
def test_fake_shapes_equal_real(device, rowwise, columnwise):
    x = sample((37, 48), torch.bfloat16, seed=2).to(device)
    kwargs = dict(rht_signs=SIGNS, rowwise=rowwise, columnwise=columnwise, row_values=True,
                  col_values=True)
    real = backend.quantize_row_col(x, **kwargs)
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = backend.quantize_row_col(torch.empty(37, 48, dtype=torch.bfloat16,
                                                    device=device), **kwargs)
    assert _meta(fake) == _meta(real)
    w = sample((32, 48), torch.float32, seed=2).to(device)
    real = backend.quantize_weight_2d(w, columnwise=False, values=True)
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = backend.quantize_weight_2d(torch.empty(32, 48, device=device),
                                          columnwise=False, values=True)
    assert _meta(fake) == _meta(real)
    # The raw ops (placeholders of absent copies included) too.
    args = (x, list(SIGNS), rowwise, columnwise, False, False, 0, 0, 0, None, None, True,
            True)
    real = torch.ops.lowprec.triton_quantize_row_col(*args)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = torch.ops.lowprec.triton_quantize_row_col(mode.from_tensor(x), *args[1:])
    assert [(t.shape, t.dtype) for t in fake] == [(t.shape, t.dtype) for t in real]


def test_custom_op_registration(device):
    """Schemas (``bool row_values=False, bool col_values=False``; ``bool values=False``),
    fake implementations and dispatch (opcheck)."""
    x = sample((20, 32), torch.bfloat16, seed=3).to(device)
    schema = str(torch.ops.lowprec.triton_quantize_row_col.default._schema)
    assert "bool row_values=False, bool col_values=False" in schema
    assert "bool values=False" in str(torch.ops.lowprec.triton_quantize_weight_2d.default._schema)
    checks = ("test_schema", "test_faketensor", "test_autograd_registration")
    torch.library.opcheck(torch.ops.lowprec.triton_quantize_row_col,
                          (x, list(SIGNS), True, True, False, True, 5, 0, 100, None, None,
                           True, False), test_utils=checks)
    torch.library.opcheck(torch.ops.lowprec.triton_quantize_weight_2d,
                          (x[:16], False, False, 0, 0, None, True), test_utils=checks)


M, K = 8192, 1024


def traced(step, shape=(M, K)):
    def setup():
        return (torch.empty(*shape, dtype=torch.bfloat16),
                torch.empty((), dtype=torch.float32))
    return launch_trace.trace(step, setup, capability=(9, 0))


@pytest.mark.parametrize("amax_given", [False, True])
def test_values_mode_launches_no_more_kernels(amax_given):
    """At a real shape (traced on fake tensors): values mode launches exactly the kernels
    packed mode launches (the amax pass when no amax is given, then the one quantize
    kernel), and only its outputs' bytes differ."""
    def row_col(values):
        def step(inputs):
            x, amax = inputs
            amax = amax if amax_given else None
            return backend.quantize_row_col(x, rht_signs=SIGNS, col_stochastic=True,
                                            row_amax=amax, col_amax=amax,
                                            row_values=values, col_values=values)
        return step

    traced(row_col(False))          # warm config.quarter_signs' cache (a one-time upload)
    packed, values = traced(row_col(False)), traced(row_col(True))
    assert values.by_kernel() == packed.by_kernel()
    assert list(packed.by_kernel())[-1] == "triton:_quantize_row_col_kernel"
    assert values.count == packed.count
    assert values.by_kernel()["triton:_quantize_row_col_kernel"] == 1
    assert ("triton:_amax_kernel" in values.by_kernel()) == (not amax_given)
    m_pad = M
    packed_out = M * K // 2 + M * K // 16 + K * m_pad // 2 + K * m_pad // 16
    values_out = 2 * M * K + 2 * K * m_pad
    assert values.nbytes - packed.nbytes == values_out - packed_out
    assert values.host_syncs == packed.host_syncs == 0

    def weight(values):
        return lambda inputs: backend.quantize_weight_2d(inputs[0], columnwise=False,
                                                         values=values)
    packed, values = traced(weight(False), (K, K)), traced(weight(True), (K, K))
    assert values.by_kernel() == packed.by_kernel()
    assert list(packed.by_kernel())[-1] == "triton:_quantize_2d_kernel"
