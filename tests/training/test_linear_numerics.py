"""lowprec.linear against a direct composition of the reference (NUMERICS 7-10).

The expected values below are built from ``lowprec.reference`` only, written out per
GEMM, so they check the recipe's wiring (which operand, which block shape, RHT, SR,
seed, offset, padding) independently of ``lowprec/linear_layer.py``. With the reference
backend forced the two sides run the same FP32 sums, so they must agree bit for bit.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowprec import backends, linear_layer, reference
from lowprec.linear_layer import Linear, linear
from lowprec.names import PRECISIONS
from lowprec.recipe import Recipe
from lowprec.sr_keys import SRStream

from . import sr_oracle

TORCH_SEED = 20240607
STREAM = "numerics.linear"     # the SR stream run_linear's calls take their keys from
U32 = 2.0 ** -24                      # FP32 unit roundoff


@pytest.fixture
def reference_backend(monkeypatch):
    """backend="auto" resolves to the reference on CPU (same summation order)."""
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", ("reference",))


def expected_seed(torch_seed):
    """The key the first SR-using call of ``run_linear``'s stream takes after
    ``torch.manual_seed(torch_seed)`` (the rule of docs/numerics.md, computed by
    ``sr_oracle``)."""
    return sr_oracle.key(STREAM, 0, torch_seed)


# -- the reference composition, GEMM by GEMM ------------------------------------------

def q4(x, **kwargs):
    return reference.quantize_nvfp4(x.contiguous(), **kwargs)


def q8(x):
    return reference.quantize_fp8_rowwise(x.contiguous())


def pad16(t):
    return F.pad(t, (0, -t.shape[-1] % 16))


def ref_fprop(x, w, b, recipe):
    if recipe.fprop == "bf16":
        return F.linear(x, w, b)
    if recipe.fprop == "fp8":
        return reference.fp8_gemm(*q8(x), *q8(w), bias=b, out_dtype=x.dtype)
    block = "16x16" if recipe.weight_2d else "1x16"
    return reference.nvfp4_gemm(*q4(x), *q4(w, block=block), bias=b, out_dtype=x.dtype)


def ref_dgrad(g, w, recipe, seed):
    if recipe.dgrad == "bf16":
        return g.mm(w)
    if recipe.dgrad == "fp8":
        return reference.fp8_gemm(*q8(g), *q8(w.t()), out_dtype=g.dtype)
    block = "16x16" if recipe.weight_2d else "1x16"
    qg = q4(g, stochastic=recipe.stochastic_rounding, seed=seed, offset=0)
    return reference.nvfp4_gemm(*qg, *q4(w.t(), block=block), out_dtype=g.dtype)


def ref_wgrad(g, x, recipe, seed):
    if recipe.wgrad == "bf16":
        return g.t().mm(x)
    if recipe.wgrad == "fp8":
        return reference.fp8_gemm(*q8(g.t()), *q8(x.t()), out_dtype=x.dtype)
    signs = (recipe.sign_vector or reference.DEFAULT_SIGN_VECTOR) if recipe.rht else None
    offset = (g.numel() + 3) // 4          # after dgrad's counters
    qg = q4(pad16(g.t()), rht_signs=signs, stochastic=recipe.stochastic_rounding,
            seed=seed, offset=offset)
    return reference.nvfp4_gemm(*qg, *q4(pad16(x.t()), rht_signs=signs), out_dtype=x.dtype)


def run_linear(x, w, b, g, recipe):
    """(y, dx, dw, db) of lowprec.linear with upstream gradient g."""
    x = x.clone().requires_grad_()
    w = w.clone().requires_grad_()
    b = None if b is None else b.clone().requires_grad_()
    torch.manual_seed(TORCH_SEED)
    y = linear(x, w, b, recipe=recipe, sr_stream=SRStream(STREAM))
    y.backward(g)
    return y.detach(), x.grad, w.grad, None if b is None else b.grad


def expected(x, w, b, g, recipe):
    seed = expected_seed(TORCH_SEED)
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    y = ref_fprop(x2, w, b, recipe).reshape(g.shape)
    dx = ref_dgrad(g2, w, recipe, seed).reshape(x.shape)
    dw = ref_wgrad(g2, x2, recipe, seed)
    return y, dx, dw, None if b is None else g2.sum(0)


def make_inputs(lead, k, n, bias=True, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, k, generator=gen).to(dtype)
    w = (torch.randn(n, k, generator=gen) / k ** 0.5).to(dtype)
    b = torch.randn(n, generator=gen).to(dtype) if bias else None
    g = torch.randn(*lead, n, generator=gen).to(dtype)
    return x, w, b, g


def assert_all_equal(actual, wanted):
    for name, a, e in zip(("y", "dx", "dw", "db"), actual, wanted):
        if e is None:
            assert a is None
            continue
        assert a.dtype == e.dtype and a.shape == e.shape, name
        assert torch.equal(a, e), f"{name}: max |diff| {(a - e).abs().max().item()}"


# -- bit-exact against the composition --------------------------------------------------

ALL_MIXES = list(itertools.product(PRECISIONS, repeat=3))


@pytest.mark.parametrize("fprop, dgrad, wgrad", ALL_MIXES)
def test_every_precision_mix_matches_reference(reference_backend, fprop, dgrad, wgrad):
    recipe = Recipe(fprop=fprop, dgrad=dgrad, wgrad=wgrad)
    x, w, b, g = make_inputs((2, 17), 32, 48)          # M = 34: padded to 48 for wgrad
    assert_all_equal(run_linear(x, w, b, g, recipe), expected(x, w, b, g, recipe))


@pytest.mark.parametrize("switches", [
    dict(rht=False), dict(stochastic_rounding=False), dict(weight_2d=False),
    dict(sign_vector=[-s for s in reference.DEFAULT_SIGN_VECTOR]),
    dict(rht=False, stochastic_rounding=False, weight_2d=False),
])
def test_nvfp4_switches_match_reference(reference_backend, switches):
    recipe = Recipe(**switches)
    x, w, b, g = make_inputs((40,), 48, 32, seed=1)
    assert_all_equal(run_linear(x, w, b, g, recipe), expected(x, w, b, g, recipe))


@pytest.mark.parametrize("lead", [(1,), (16,), (33,), (3, 5, 7), (0,)])
@pytest.mark.parametrize("bias", [True, False])
def test_any_token_count_and_leading_dims(reference_backend, lead, bias):
    x, w, b, g = make_inputs(lead, 32, 16, bias=bias, seed=2)
    assert_all_equal(run_linear(x, w, b, g, Recipe()), expected(x, w, b, g, Recipe()))


def test_bf16_weights_and_activations(reference_backend):
    x, w, b, g = make_inputs((24,), 32, 32, seed=3, dtype=torch.bfloat16)
    out = run_linear(x, w, b, g, Recipe())
    assert [t.dtype for t in out] == [torch.bfloat16] * 4
    assert_all_equal(out, expected(x, w, b, g, Recipe()))


@pytest.mark.parametrize("guard", ["torch._C._DisableAutocast", "torch.autocast"])
def test_autocast_quantizes_the_autocast_input_and_keeps_fp32_math(reference_backend, guard,
                                                                   monkeypatch):
    """Under autocast the layer sees x in bf16 (as F.linear would), but the GEMM's own
    FP32 accumulation must not be turned into a bf16 matmul by autocast; with torch's C++
    guard, and with ``torch.autocast(enabled=False)`` where a torch lacks that guard."""
    if guard == "torch.autocast":
        monkeypatch.setattr(linear_layer, "_no_autocast", None)
    x, w, b, g = make_inputs((24,), 32, 32, seed=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(TORCH_SEED)
        y = linear(x, w, b)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, ref_fprop(x.bfloat16(), w, b, Recipe()))


def test_gemm_backend_auto_within_fp32_summation_bound():
    """With backend="auto" (maybe a compiled CPU backend) only the order of the FP32
    sums may differ: |y - y_ref| <= 2 gamma_K sum_k |a_k b_k| alpha + 2u |y_ref|."""
    x, w, b, g = make_inputs((64,), 256, 32, bias=False, seed=5)
    torch.manual_seed(TORCH_SEED)
    y = linear(x, w, None)
    qx, qw = q4(x), q4(w, block="16x16")
    abs_prod = (reference.block_dequantize_nvfp4(*qx[:2]).abs()
                @ reference.block_dequantize_nvfp4(*qw[:2]).abs().t())
    alpha = reference.global_decode_scale(qx[2]) * reference.global_decode_scale(qw[2])
    k = x.shape[-1]
    gamma = k * U32 / (1 - k * U32)
    y_ref = reference.nvfp4_gemm(*qx, *qw, out_dtype=torch.float32)
    bound = 2 * gamma * abs_prod * alpha + 2 * U32 * y_ref.abs()
    assert ((y - y_ref).abs() <= bound).all()


# -- high precision is nn.Linear --------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(8,), (2, 3, 16)])
def test_all_bf16_equals_nn_linear(dtype, bias, lead):
    x, _, _, g = make_inputs(lead, 48, 32, seed=6, dtype=dtype)
    torch.manual_seed(0)
    plain = nn.Linear(48, 32, bias=bias, dtype=dtype)
    ours = Linear.from_linear(nn.Linear(48, 32, bias=bias, dtype=dtype),
                              Recipe.uniform("bf16"))
    ours.load_state_dict(plain.state_dict())
    grads = []
    for module in (plain, ours):
        xi = x.clone().requires_grad_()
        y = module(xi)
        y.backward(g)
        grads.append([y, xi.grad] + [p.grad for p in module.parameters()])
    for a, e in zip(*grads):
        assert torch.equal(a, e)


@pytest.mark.parametrize("lead", [(8,), (2, 3, 16)])
def test_unquantized_backward_gemms_equal_nn_linear(lead):
    """The op's own bf16 dgrad/wgrad (fprop quantized) give nn.Linear's bits."""
    x, w, b, g = make_inputs(lead, 48, 32, seed=7)
    plain = nn.Linear(48, 32)
    with torch.no_grad():
        plain.weight.copy_(w)
        plain.bias.copy_(b)
    xp = x.clone().requires_grad_()
    plain(xp).backward(g)
    _, dx, dw, db = run_linear(x, w, b, g, Recipe(dgrad="bf16", wgrad="bf16"))
    assert torch.equal(dx, xp.grad)
    assert torch.equal(dw, plain.weight.grad)
    assert torch.equal(db, plain.bias.grad)


# -- what the backward keeps ------------------------------------------------------------

@pytest.mark.parametrize("wgrad, max_bytes_per_element", [("nvfp4", 0.5625), ("fp8", 1.0)])
def test_backward_keeps_quantized_activations_not_x(wgrad, max_bytes_per_element):
    x, w, b, _ = make_inputs((64,), 64, 32, seed=8)
    x.requires_grad_()
    w.requires_grad_()
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = linear(x, w, b, recipe=Recipe(wgrad=wgrad))
    activations = [t for t in saved if t is not w and t.dtype != torch.int64]
    assert all(t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
               for t in activations)
    nbytes = sum(t.numel() * t.element_size() for t in activations)
    # 4.5 bits per element for NVFP4 (+ a 4-byte amax), 8 bits + a row scale for FP8
    assert nbytes <= max_bytes_per_element * x.numel() + 4 * x.shape[-1] + 4
    y.sum().backward()                                   # and the backward runs from them


# -- bad input --------------------------------------------------------------------------

def test_nan_in_gives_nan_out():
    x, w, b, g = make_inputs((32,), 32, 32, seed=9)
    x[3, 5] = float("nan")
    x.requires_grad_()
    w.requires_grad_()
    y = linear(x, w, b)
    # the NaN poisons X's global amax, so every NVFP4 output reads a NaN scale
    assert torch.isnan(y).all()
    y_fp8 = linear(x, w, b, recipe=Recipe.uniform("fp8"))
    assert torch.isnan(y_fp8[3]).all()                   # FP8 scales are per row
    gx = g.clone()
    gx[0, 0] = float("inf")
    linear(x.detach().nan_to_num().requires_grad_(), w, b).backward(gx)
    assert torch.isnan(w.grad).all()


@pytest.mark.parametrize("in_features, out_features", [(20, 32), (32, 20)])
def test_nvfp4_refuses_shapes_that_are_not_multiples_of_16(in_features, out_features):
    message = rf"K={in_features}\)|N={out_features},"
    with pytest.raises(ValueError, match=message):
        Linear(in_features, out_features)
    layer = Linear(in_features, out_features, recipe=Recipe.uniform("fp8"))
    with pytest.raises(ValueError, match=f"Linear\\(in_features={in_features}"):
        layer.recipe = Recipe()
    with pytest.raises(ValueError, match="nvfp4 needs K % 16 == 0 and N % 16 == 0"):
        linear(torch.randn(4, in_features), layer.weight)
    layer(torch.randn(4, in_features))                   # FP8 takes any shape on CPU


def test_weight_transpose_codes_are_the_transpose_of_the_weight_codes():
    """NUMERICS 5: dgrad's W^T copy equals fprop's W, transposed (2-D scaling)."""
    w = torch.randn(48, 32, generator=torch.Generator().manual_seed(10))
    data, scale, amax = reference.quantize_nvfp4(w, block="16x16")
    data_t, scale_t, amax_t = reference.quantize_nvfp4(w.t().contiguous(), block="16x16")
    assert torch.equal(reference.unpack_codes(data).t(), reference.unpack_codes(data_t))
    tiles = scale.view(torch.uint8)[::16]                # one row per 16-row tile
    tiles_t = scale_t.view(torch.uint8)[::16]
    assert torch.equal(tiles.t(), tiles_t) and torch.equal(amax, amax_t)
