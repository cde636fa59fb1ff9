"""``lowprec.disabled(model)``: switch a converted model's quantization off for a while.

For evaluation in high precision, or to compare a step with and without quantization,
as Transformer Engine's ``fp8_autocast(enabled=False)``. Inside the ``with`` block every
converted layer of the model (``lowprec.Linear``, the Conv1D and ``GroupedExperts``
forms) has the recipe ``Recipe.uniform("bf16")``, which quantizes nothing: a Linear
computes exactly ``F.linear`` (a Conv1D exactly the original's ``addmm``) in the
layer's own dtype, and no stochastic-rounding key is drawn, so torch's RNG stream and
training's SR keys after the block are what they would have been without it.
On exit, also after an exception, every layer gets back the very recipe it had.

Only the modules that ``convert`` made are switched; calls of ``lowprec.linear`` or
``lowprec.grouped_linear`` in a user's own module pass their recipe explicitly and are
left as they are.
"""

import contextlib

from lowprec.conv1d import Conv1D
from lowprec.linear_layer import Linear
from lowprec.moe import GroupedExperts
from lowprec.recipe import Recipe

HIGH_PRECISION = Recipe.uniform("bf16")


def _recipe_of(module):
    return module.recipes if isinstance(module, GroupedExperts) else module.recipe


def _set_recipe(module, recipe):
    """``recipe``: one Recipe for every GEMM of the module, or a GroupedExperts' dict."""
    if isinstance(module, GroupedExperts):
        if isinstance(recipe, Recipe):
            recipe = {tensor: recipe for tensor in module.recipes}
        module.set_recipes(recipe)
    else:
        module.recipe = recipe


@contextlib.contextmanager
def disabled(model):
    """``with lowprec.disabled(model): ...`` runs every converted layer of ``model`` in
    high precision (see the module docstring); yields ``model``. Nests."""
    layers = [m for m in model.modules() if isinstance(m, (Linear, Conv1D, GroupedExperts))]
    saved = [(module, _recipe_of(module)) for module in layers]
    try:
        for module in layers:
            _set_recipe(module, HIGH_PRECISION)
        yield model
    finally:
        for module, recipe in saved:
            _set_recipe(module, recipe)
