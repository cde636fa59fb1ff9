"""Applying a plan to a model: each planned layer becomes a lowprec module with the
plan's recipe, or, converted before, gets the new recipe in place.

Every planned layer becomes a lowprec module (a BF16 one quantizes nothing), so applying
another plan later only changes recipes: parameters, their optimizer state and the module
objects stay as they are.
"""

from lowprec.conv1d import Conv1D, is_conv1d
from lowprec.discovery import check_weight_dtype, is_linear, module_shape
from lowprec.linear_layer import Linear, check_nvfp4_shape
from lowprec.moe import GroupedExperts, experts_adapter
from lowprec.recipe import Recipe


def apply_plan(model, plan, recipe=None):
    """Give every layer of ``plan`` its precisions; returns the (possibly new) root.

    An ``nn.Linear`` becomes a ``lowprec.Linear``, a Conv1D a ``lowprec.conv1d.Conv1D``,
    a group of experts a ``GroupedExperts``, each sharing the original's Parameters; a
    module converted before gets a new recipe in place. Untouched entries are skipped.
    Each layer gets its ``LayerPlan.recipe``; with ``recipe`` given, that recipe's
    switches (RHT, SR, 2-D, signs) with the plan's precisions. Everything is validated
    before anything changes.

    Raises:
        KeyError: a layer name not in the model. TypeError: not a convertible layer.
        ValueError: a shape that differs from the plan's, or NVFP4 on a bad shape.
    """
    resolved = {}                     # module -> {tensor or None: (name, recipe)}
    for layer in plan:
        if layer.kind == "untouched":
            continue
        module, tensor = _resolve(model, layer)
        if tensor is None and not (is_linear(module) or is_conv1d(module)):
            raise TypeError(f"plan layer {layer.name!r} is a {type(module).__name__}; only "
                            f"nn.Linear, Conv1D, expert projections and their lowprec "
                            f"forms can be planned")
        shape = module_shape(module, tensor)
        if shape != layer.shape:
            raise ValueError(f"plan layer {layer.name!r} has shape {layer.shape} but the "
                             f"module's weight is {shape} (as a linear weight (N, K))")
        new_recipe = layer.recipe if recipe is None else \
            recipe.with_precisions_of(layer.recipe)
        check_nvfp4_shape(shape, new_recipe, layer.name)
        if new_recipe.quantized:
            check_weight_dtype(layer.name, _weight(module, tensor))
        resolved.setdefault(module, {})[tensor] = (layer.name, new_recipe)

    new_modules = [(module, _converted(module, recipes)) for module, recipes in
                   resolved.items()]
    for module, new in new_modules:
        if new is module:
            continue
        if module is model:
            model = new
        else:
            swap_module(model, module, new)
    return model


def _resolve(model, layer):
    """``(module, tensor or None, (N, K))`` that a plan entry names."""
    try:
        return model.get_submodule(layer.name), None
    except AttributeError:
        pass
    owner, _, tensor = layer.name.rpartition(".")
    try:
        module = model.get_submodule(owner)
    except AttributeError:
        module = None
    adapter = None if module is None else experts_adapter(module)
    if adapter is None or tensor not in adapter.tensors:
        raise KeyError(f"plan layer {layer.name!r} is not a submodule (or expert "
                       f"projection) of the model")
    return module, tensor


def _weight(module, tensor):
    return getattr(module, tensor) if tensor is not None else module.weight


def _converted(module, recipes):
    """The lowprec module for ``module`` with ``recipes`` ({tensor: (name, recipe)})."""
    if None not in recipes:                                   # expert projections
        named = {tensor: recipe for tensor, (_, recipe) in recipes.items()}
        owner = recipes[next(iter(recipes))][0].rpartition(".")[0]
        if isinstance(module, GroupedExperts):
            module.set_recipes(named)
            return module
        adapter = experts_adapter(module)
        # BF16 first (takes any shape); projections the plan leaves out stay so.
        new = adapter.convert(module, {t: Recipe.uniform("bf16") for t in adapter.tensors})
        new.lowprec_name = owner
        new.set_recipes(named)
        return new
    name, recipe = recipes[None]
    if isinstance(module, (Linear, Conv1D)):
        module.lowprec_name = name
        module.recipe = recipe
        return module
    if is_conv1d(module):
        new = Conv1D(module, Recipe.uniform("bf16"))
    else:
        new = Linear.from_linear(module, Recipe.uniform("bf16"))
    new.lowprec_name = name
    new.recipe = recipe
    return new


def swap_module(model, old, new):
    """Put ``new`` wherever ``old`` is registered (a module may be registered twice)."""
    for parent in model.modules():
        for key, child in parent._modules.items():
            if child is old:
                parent._modules[key] = new


