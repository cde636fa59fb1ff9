"""The planner's quantized GEMMs are the training layer's: ``gemm_error`` against what
``lowprec.linear`` computes, bit for bit, for the same recipe, inputs and SR key.

``lowprec.linear`` is the reference here (its forward output and its backward's dX and
dW in FP32); ``gemm_error`` must reproduce each of its three GEMMs with the recipe's
switches. The SR key: each forward that needs SR draws one 64-bit Philox key from
torch's CPU generator (``lowprec.linear_layer`` module docstring; dgrad at counter 0, wgrad
after dgrad's words), so a ``SeedStream`` with that key, used for dgrad then wgrad,
gives ``gemm_error`` the very same words.

Mutants killed (each re-run, each fails a case below): ``gemm_error`` ignoring
``weight_2d`` (always 16x16) -> ``weight_2d=False``; ignoring a custom sign vector (TE's
default signs) -> ``custom signs``; dgrad without SR -> every SR case's dX.
"""

import pytest
import torch

import lowprec
from lowprec.planner import gemm_error
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

    cfg = gemm_error.QuantConfig.from_recipe(recipe)
    seeds = gemm_error.SeedStream(the_key(1234))
    assert torch.equal(gemm_error.fprop(x, w, recipe.fprop, cfg), y.detach())
    assert torch.equal(gemm_error.dgrad(g, w, recipe.dgrad, cfg, seeds), xr.grad)
    assert torch.equal(gemm_error.wgrad(g, x, recipe.wgrad, cfg, seeds), wr.grad)
