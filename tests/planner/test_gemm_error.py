"""The planner's quantized GEMMs are the training layer's: ``gemm_error`` against what
``lowprec.linear`` computes, bit for bit, for the same recipe, inputs and SR key (the
wiring test), and both against an independent oracle built from ``lowprec.reference``
alone (quantizers and GEMMs on the dequantized operands, NUMERICS 7-9): since the
planner calls the training layer's functions, comparing the two cannot see an error
they share; the oracle can.

``lowprec.linear`` is the reference here (its forward output and its backward's dX and
dW in FP32); ``gemm_error`` must reproduce each of its three GEMMs with the recipe's
switches. The SR key: each forward that needs SR takes the next key of its SR stream
(docs/numerics.md 4.2; dgrad at counter 0, wgrad after dgrad's words); the call here
passes a fresh stream, and a copy of it taken before the call gives that key (the rule
itself is tested against an independent oracle in tests/training/test_sr_keys.py), so a
``SeedStream`` with that key, used for dgrad then wgrad, gives ``gemm_error`` the very
same words.

Mutants killed (each re-run, each fails a case below): ``gemm_error`` ignoring
``weight_2d`` (always 16x16) -> ``weight_2d=False``; ignoring a custom sign vector (TE's
default signs) -> ``custom signs``; dgrad without SR -> every SR case's dX.
"""

import copy
import math

import pytest
import torch

import lowprec
from lowprec import reference as ref
from lowprec.planner import gemm_error
from lowprec.planner.rng import mix_seed
from lowprec.planner.stats import collect_stats
from lowprec.recipe import Recipe
from lowprec.sr_keys import SRStream

M, K, N = 40, 64, 32          # M not a multiple of 16: wgrad pads the tokens
SIGNS = (1, -1, -1, 1, 1, 1, -1, 1, -1, -1, 1, -1, 1, 1, -1, -1)

RECIPES = {
    "default": Recipe(),
    "weight_2d=False": Recipe(weight_2d=False),
    "custom signs": Recipe(sign_vector=SIGNS),
    "no SR": Recipe(stochastic_rounding=False),
    "no RHT": Recipe(rht=False),
    "fp8": Recipe.uniform("fp8"),
    "mixed": Recipe(fprop="fp8", dgrad="nvfp4", wgrad="nvfp4", weight_2d=False),
}





def oracle(x, w, g, recipe, key):
    """``{gemm: output}`` of the three GEMMs from the reference functions alone.

    fprop: X 1x16 RNE, W 16x16 (``weight_2d``) or 1x16 RNE; dgrad: dY 1x16 with SR
    (counters from 0), W^T the transposed 2-D copy or W^T quantized 1x16 along N; wgrad:
    dY^T and X^T zero-padded along the tokens, RHT'd with the recipe's signs, dY^T with
    SR after dgrad's counters. FP8: per row along the contraction dim. FP32 outputs.
    """
    signs = (recipe.sign_vector or ref.DEFAULT_SIGN_VECTOR) if recipe.rht else None
    sr = recipe.stochastic_rounding
    f32 = torch.float32

    def fp8(t):
        return ref.quantize_fp8_rowwise(t.contiguous())

    def col(t, **kw):
        return ref.quantize_nvfp4(ref.pad_rows16(t).t().contiguous(), rht_signs=signs, **kw)

    if recipe.weight_2d:
        qw, qwt = ref.quantize_weight_2d(w)
    else:
        qw, qwt = ref.quantize_nvfp4(w), ref.quantize_nvfp4(w.t().contiguous())
    out = {}
    if recipe.fprop == "nvfp4":
        out["fprop"] = ref.nvfp4_gemm(*ref.quantize_nvfp4(x), *qw, out_dtype=f32)
    else:
        out["fprop"] = ref.fp8_gemm(*fp8(x), *fp8(w), out_dtype=f32)
    if recipe.dgrad == "nvfp4":
        qg = ref.quantize_nvfp4(g, stochastic=sr, seed=key, offset=0)
        out["dgrad"] = ref.nvfp4_gemm(*qg, *qwt, out_dtype=f32)
    else:
        out["dgrad"] = ref.fp8_gemm(*fp8(g), *fp8(w.t()), out_dtype=f32)
    if recipe.wgrad == "nvfp4":
        qgt = col(g, stochastic=sr, seed=key,
                  offset=ref.counters_used(g.numel()) if sr else 0)
        out["wgrad"] = ref.nvfp4_gemm(*qgt, *col(x), out_dtype=f32)
    else:
        out["wgrad"] = ref.fp8_gemm(*fp8(g.t()), *fp8(x.t()), out_dtype=f32)
    return out


@pytest.mark.parametrize("name", list(RECIPES))
def test_gemm_error_computes_what_the_reference_oracle_computes(name):
    """The values, independently: gemm_error's three GEMMs equal the oracle's bits."""
    recipe = RECIPES[name]
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(M, K, generator=gen)
    w = torch.randn(N, K, generator=gen) / 8
    g = torch.randn(M, N, generator=gen)
    key = 0x0123456789ABCDEF
    want = oracle(x, w, g, recipe, key)
    seeds = gemm_error.SeedStream(key)
    assert torch.equal(gemm_error.fprop(x, w, recipe.fprop, recipe), want["fprop"])
    assert torch.equal(gemm_error.dgrad(g, w, recipe.dgrad, recipe, seeds), want["dgrad"])
    assert torch.equal(gemm_error.wgrad(g, x, recipe.wgrad, recipe, seeds), want["wgrad"])


@pytest.mark.parametrize("name", list(RECIPES))
def test_gemm_error_computes_what_lowprec_linear_computes(name):
    """The wiring: the planner's GEMMs are the training layer's, SR key included."""
    recipe = RECIPES[name]
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(M, K, generator=gen)
    w = torch.randn(N, K, generator=gen) / 8
    g = torch.randn(M, N, generator=gen)

    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    stream = SRStream("planner.wiring")
    key = copy.deepcopy(stream)                 # the key the call below takes
    torch.manual_seed(1234)
    y = lowprec.linear(xr, wr, recipe=recipe, sr_stream=stream)
    y.backward(g)

    seeds = gemm_error.SeedStream(key.next_key())
    assert torch.equal(gemm_error.fprop(x, w, recipe.fprop, recipe), y.detach())
    assert torch.equal(gemm_error.dgrad(g, w, recipe.dgrad, recipe, seeds), xr.grad)
    assert torch.equal(gemm_error.wgrad(g, x, recipe.wgrad, recipe, seeds), wr.grad)


def _rel(approx, exact):
    """``||approx - exact|| / ||exact||``: the FP32 error tensor (what the planner calls
    E), its squares summed in float64."""
    diff = (approx - exact).double().square().sum()
    return math.sqrt(float(diff) / float(exact.double().square().sum()))


@pytest.mark.parametrize("name", ["default", "weight_2d=False", "custom signs", "no RHT"])
def test_the_planners_errors_are_the_training_layers_errors(name):
    """``collect_stats``'s relative errors of fprop, dgrad and wgrad for one layer equal
    those of the reference oracle's Y, dX and dW (each GEMM from ``lowprec.reference``
    on the quantized operands, not from the functions the planner calls).

    The planner's SR words: its ``SeedStream`` key ``_mix(seed, rank 0)``, with dgrad's
    NVFP4 words first (counter 0) and wgrad's after them, the layout the oracle uses.
    The GEMM outputs are then the same bits, and both sides sum M x N or N x K squares
    in float64 (relative rounding below n * 2^-53 ~ 3e-13 for n = 2560), hence
    ``rel=1e-12``. Mutations tried: ``gemm_error.wgrad`` without RHT on X^T fails every
    RHT case; dgrad's SR offset moved by one counter fails every case.
    """
    base = RECIPES[name]
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(M, K, generator=gen)
    c = torch.randn(M, N, generator=gen)            # the loss sum(c * Y) gives dL/dY = c
    layer = torch.nn.Linear(K, N, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(N, K, generator=gen) / 8)
    loss_fn = lambda model, batch: (model(batch[0]) * c).sum()     # noqa: E731
    seed = 99
    stats = collect_stats(layer, [("l", layer, None)], [(x,)], loss_fn=loss_fn,
                          recipe=base, seed=seed, progress=False,
                          process_group=None).layers["l"]

    key = mix_seed(seed, 0)                       # the planner's SR key on rank 0
    w = layer.weight.detach()
    exact = {"fprop": x @ w.t(), "dgrad": c @ w, "wgrad": c.t() @ x}
    for p in ("nvfp4", "fp8"):
        got = oracle(x, w, c, base.replace(fprop=p, dgrad=p, wgrad=p), key)
        for gemm in ("fprop", "dgrad", "wgrad"):
            value = _rel(got[gemm], exact[gemm])
            assert value > 0                        # the GEMM really quantized
            assert stats.rel[gemm][p] == pytest.approx(value, rel=1e-12), (gemm, p)
