"""The planner's quantized GEMMs are the training layer's: ``gemm_error`` against what
``lowprec.linear`` computes, bit for bit, for the same recipe, inputs and SR key.

``lowprec.linear`` is the reference here (its forward output and its backward's dX and
dW in FP32); ``gemm_error`` must reproduce each of its three GEMMs with the recipe's
switches. The SR key: each forward that needs SR draws one 64-bit Philox key from
torch's CPU generator (``lowprec.linear_layer`` module docstring; dgrad at counter 0,
wgrad after dgrad's words), so a ``SeedStream`` with that key, used for dgrad then
wgrad, gives ``gemm_error`` the very same words.

Mutants killed (each re-run, each fails a case below): ``gemm_error`` ignoring
``weight_2d`` (always 16x16) -> ``weight_2d=False``; ignoring a custom sign vector (TE's
default signs) -> ``custom signs``; dgrad without SR -> every SR case's dX.
"""

import math

import pytest
import torch

import lowprec
from lowprec import linear_layer
from lowprec.planner import gemm_error
from lowprec.planner import stats as stats_module
from lowprec.planner.stats import collect_stats
from lowprec.recipe import Recipe

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


def the_key(seed):
    """The Philox key ``lowprec.linear`` draws after ``torch.manual_seed(seed)``: one
    ``torch.randint`` over int64, read as unsigned 64 bits (its module docstring)."""
    torch.manual_seed(seed)
    return int(torch.randint(-(1 << 63), (1 << 63) - 1, (), dtype=torch.int64)) % (1 << 64)


@pytest.mark.parametrize("name", list(RECIPES))
def test_gemm_error_computes_what_lowprec_linear_computes(name):
    recipe = RECIPES[name]
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(M, K, generator=gen)
    w = torch.randn(N, K, generator=gen) / 8
    g = torch.randn(M, N, generator=gen)

    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    torch.manual_seed(1234)
    y = lowprec.linear(xr, wr, recipe=recipe)
    y.backward(g)

    seeds = gemm_error.SeedStream(the_key(1234))
    assert torch.equal(gemm_error.fprop(x, w, recipe.fprop, recipe), y.detach())
    assert torch.equal(gemm_error.dgrad(g, w, recipe.dgrad, recipe, seeds), xr.grad)
    assert torch.equal(gemm_error.wgrad(g, x, recipe.wgrad, recipe, seeds), wr.grad)


def _rel(approx, exact):
    """``||approx - exact|| / ||exact||``: the FP32 error tensor (what the planner calls
    E), its squares summed in float64."""
    diff = (approx - exact).double().square().sum()
    return math.sqrt(float(diff) / float(exact.double().square().sum()))


@pytest.mark.parametrize("name", ["default", "weight_2d=False", "custom signs", "no RHT"])
def test_the_planners_errors_are_the_training_layers_errors(name, monkeypatch):
    """``collect_stats``'s relative errors of fprop, dgrad and wgrad for one layer equal
    those of ``lowprec.linear``'s own Y, dX and dW, each computed here by hand.

    The planner's SR words: its ``SeedStream`` key ``_mix(seed, rank 0)``, with dgrad's
    NVFP4 words first (counter 0) and wgrad's after them, which is the layout
    ``lowprec.linear`` uses for one key; the layer is made to draw that key. The GEMM
    outputs are then the same bits, and both sides sum M x N or N x K squares in float64
    (relative rounding below n * 2^-53 ~ 3e-13 for n = 2560), hence ``rel=1e-12``.
    Mutations tried: ``gemm_error.wgrad`` without RHT on X^T fails every RHT case;
    dgrad's SR offset moved by one counter fails every case.
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

    key = stats_module._mix(seed, 0)                # the planner's SR key on rank 0
    monkeypatch.setattr(linear_layer, "draw_seed",
                        lambda anchor: torch.tensor(key - (1 << 64) if key >= 1 << 63
                                                    else key, dtype=torch.int64))
    w = layer.weight.detach()
    exact = {"fprop": x @ w.t(), "dgrad": c @ w, "wgrad": c.t() @ x}
    for p in ("nvfp4", "fp8"):
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = lowprec.linear(xr, wr, recipe=base.replace(fprop=p, dgrad=p, wgrad=p))
        y.backward(c)
        by_hand = {"fprop": _rel(y.detach(), exact["fprop"]),
                   "dgrad": _rel(xr.grad, exact["dgrad"]),
                   "wgrad": _rel(wr.grad, exact["wgrad"])}
        for gemm, value in by_hand.items():
            assert stats.rel[gemm][p] == pytest.approx(value, rel=1e-12), (gemm, p)
