"""Recipe mixes (one precision per GEMM) on every layer kind, against an oracle built
from ``lowprec.reference`` alone (issue 22, mutants #2 and #3).

The oracle composes the three GEMMs of NUMERICS 7-9 from the reference quantizers and
GEMMs, not from ``lowprec.linear_layer``: fprop ``Y = X W^T + b`` (X 1x16 RNE, W 16x16
RNE; FP8 per row along K), dgrad ``dX = dY W`` (dY 1x16 SR at counters [0, ...), W^T the
transposed 2-D copy; FP8 per row along N), wgrad ``dW = dY^T X`` (both RHT'd with TE's
signs along the zero-padded tokens, dY^T with SR after dgrad's counters; FP8 per row
along M); a "bf16" GEMM is the plain product in the inputs' dtype (FP32 here). The SR
key is the first of the layer's stream (``sr_oracle``: the run seed, the layer's name,
call 0). The reference GEMM is the CPU backends' formula term for term, so every
comparison is bit-exact.

Mutants caught: ``conv1d.py`` ``not recipe.quantized`` -> ``recipe.fprop == "bf16"``
(runs every GEMM unquantized for fprop="bf16" with quantized backward GEMMs: the
Conv1D cases' dX and dW); FP8 fprop bias added after the bf16 output
(``test_fp8_fprop_adds_the_bias_in_fp32_before_the_one_rounding``).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowprec
from lowprec import reference as ref
from lowprec.conv1d import Conv1D
from lowprec.grouped import grouped_linear
from lowprec.recipe import Recipe
from lowprec.sr_keys import SRStream

from . import sr_oracle

M, K, N = 40, 32, 48            # M not a multiple of 16: wgrad pads the tokens
SIGNS = ref.DEFAULT_SIGN_VECTOR

MIXES = [Recipe(fprop="bf16", dgrad="nvfp4", wgrad="nvfp4"),
         Recipe(fprop="nvfp4", dgrad="bf16", wgrad="bf16"),
         Recipe(fprop="bf16", dgrad="bf16", wgrad="nvfp4"),
         Recipe(fprop="fp8", dgrad="bf16", wgrad="nvfp4"),
         Recipe(fprop="bf16", dgrad="fp8", wgrad="bf16"),
         Recipe(fprop="bf16", dgrad="nvfp4", wgrad="fp8")]


def first_key(label, seed=21):
    """The key of the first SR-needing call of the layer (stream) named ``label`` after
    ``torch.manual_seed(seed)``."""
    return sr_oracle.key(label, 0, seed)


def fp8(t):
    return ref.quantize_fp8_rowwise(t.contiguous())


def col_nvfp4(t, **kw):
    """The columnwise NVFP4 copy: t [M, C] padded to 16 rows, transposed, RHT'd."""
    return ref.quantize_nvfp4(ref.pad_rows16(t).t().contiguous(), rht_signs=SIGNS, **kw)


def oracle(x, w, b, g, recipe, key):
    """``(Y, dX, dW)`` of one linear layer from the reference functions alone."""
    out = torch.float32
    if recipe.fprop == "bf16":
        y = F.linear(x, w, b)
    elif recipe.fprop == "fp8":
        y = ref.fp8_gemm(*fp8(x), *fp8(w), bias=b, out_dtype=out)
    else:
        qw, _ = ref.quantize_weight_2d(w, columnwise=False)
        y = ref.nvfp4_gemm(*ref.quantize_nvfp4(x), *qw, bias=b, out_dtype=out)
    if recipe.dgrad == "bf16":
        dx = g @ w
    elif recipe.dgrad == "fp8":
        dx = ref.fp8_gemm(*fp8(g), *fp8(w.t()), out_dtype=out)
    else:
        qg = ref.quantize_nvfp4(g, stochastic=True, seed=key, offset=0)
        dx = ref.nvfp4_gemm(*qg, *ref.quantize_weight_2d(w)[1], out_dtype=out)
    if recipe.wgrad == "bf16":
        dw = g.t() @ x
    elif recipe.wgrad == "fp8":
        dw = ref.fp8_gemm(*fp8(g.t()), *fp8(x.t()), out_dtype=out)
    else:
        qgt = col_nvfp4(g, stochastic=True, seed=key, offset=ref.counters_used(g.numel()))
        dw = ref.nvfp4_gemm(*qgt, *col_nvfp4(x), out_dtype=out)
    return y, dx, dw


def data(seed=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=gen)
    w = torch.randn(N, K, generator=gen) / 4
    b = torch.randn(N, generator=gen)
    g = torch.randn(M, N, generator=gen)
    return x, w, b, g


def run(module, x, g, seed=21):
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)
    y = module(x)
    y.backward(g)
    return y.detach(), x.grad


def assert_bits(got, want, what):
    assert got.dtype == want.dtype and torch.equal(got, want), what


class GPT2Conv1D(nn.Module):
    """transformers' Conv1D as GPT-2 has it (y = x @ W + b, W [K, N]); written here so
    the test needs no transformers."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))


@pytest.mark.parametrize("recipe", MIXES, ids=str)
def test_linear_runs_each_gemm_in_its_own_precision(recipe):
    x, w, b, g = data()
    layer = lowprec.Linear(K, N, recipe=recipe)
    layer.lowprec_name = "mixes.linear"
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
    y, dx = run(layer, x, g)
    want = oracle(x, w, b, g, recipe, first_key("mixes.linear"))
    assert_bits(y, want[0], "Y")
    assert_bits(dx, want[1], "dX")
    assert_bits(layer.weight.grad, want[2], "dW")
    assert_bits(layer.bias.grad, g.sum(0), "db")


@pytest.mark.parametrize("recipe", MIXES, ids=str)
def test_conv1d_runs_each_gemm_in_its_own_precision(recipe):
    """Conv1D multiplies by W^T of its [K, N] weight; the oracle takes the [N, K] one."""
    x, w, b, g = data()
    original = GPT2Conv1D(N, K)
    with torch.no_grad():
        original.weight.copy_(w.t())
        original.bias.copy_(b)
    layer = Conv1D(original, recipe)
    layer.lowprec_name = "mixes.conv1d"
    y, dx = run(layer, x.reshape(4, 10, K), g.reshape(4, 10, N))    # 3-D, as in GPT-2
    want = oracle(x, w, b, g, recipe, first_key("mixes.conv1d"))
    assert_bits(y.reshape(M, N), want[0], "Y")
    assert_bits(dx.reshape(M, K), want[1], "dX")
    assert_bits(layer.weight.grad.t(), want[2], "dW")


@pytest.mark.parametrize("recipe", MIXES, ids=str)
def test_grouped_linear_runs_each_gemm_in_its_own_precision(recipe):
    """Two experts over 13 and 27 rows: each is a linear layer taking the first key of
    its own stream."""
    x, _, _, g = data()
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(2, N, K, generator=gen) / 4
    counts = [13, 27]
    wr = weight.clone().requires_grad_()
    streams = [SRStream("mixes.expert0"), SRStream("mixes.expert1")]
    y, dx = run(lambda a: grouped_linear(a, wr, torch.tensor(counts), recipe=recipe,
                                         sr_streams=streams), x, g)
    starts = [0, counts[0], M]
    for e, key in enumerate([first_key("mixes.expert0"), first_key("mixes.expert1")]):
        rows = slice(starts[e], starts[e + 1])
        want = oracle(x[rows], weight[e], None, g[rows], recipe, key)
        assert_bits(y[rows], want[0], f"Y of expert {e}")
        assert_bits(dx[rows], want[1], f"dX of expert {e}")
        assert_bits(wr.grad[e], want[2], f"dW of expert {e}")


def test_the_mixes_quantize_what_they_say():
    """The oracle itself: a quantized GEMM differs from the plain product (else the
    tests above could not tell a mix from all-BF16)."""
    x, w, b, g = data()
    plain = oracle(x, w, b, g, Recipe.uniform("bf16"), 0)
    for recipe in MIXES:
        got = oracle(x, w, b, g, recipe, first_key("mixes.linear"))
        for gemm, a, p in zip(("fprop", "dgrad", "wgrad"), got, plain):
            assert torch.equal(a, p) == (getattr(recipe, gemm) == "bf16"), (recipe, gemm)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_fp8_fprop_adds_the_bias_in_fp32_before_the_one_rounding(kind):
    """NUMERICS 8/9: the FP32 accumulator times the two scales, plus the bias in FP32,
    then one rounding to the output dtype (bf16 here). Adding the bias to the bf16
    output rounds twice and changes many outputs (checked below), so a layer doing that
    fails this test."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(M, K, generator=gen).to(torch.bfloat16)
    w = torch.randn(N, K, generator=gen) / 4
    b = torch.randn(N, generator=gen) * 3
    recipe = Recipe(fprop="fp8")
    if kind == "linear":
        layer = lowprec.Linear(K, N, recipe=recipe)
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    else:
        original = GPT2Conv1D(N, K)
        with torch.no_grad():
            original.weight.copy_(w.t())
            original.bias.copy_(b)
        layer = Conv1D(original, recipe)
    with torch.no_grad():
        y = layer(x)
    qx, qw = fp8(x), fp8(w)
    want = ref.fp8_gemm(*qx, *qw, bias=b, out_dtype=torch.bfloat16)
    # The same oracle by hand, on the dequantized operands' codes: FP32 products and
    # sums, the scales on the accumulator, the bias, one rounding.
    acc = qx[0].float() @ qw[0].float().t()
    assert torch.equal(want, (acc * qx[1] * qw[1].t() + b).to(torch.bfloat16))
    assert_bits(y, want, "Y")
    twice = (ref.fp8_gemm(*qx, *qw, out_dtype=torch.bfloat16) + b.to(torch.bfloat16))
    assert (twice != want).sum() > 50              # the double rounding is visible
