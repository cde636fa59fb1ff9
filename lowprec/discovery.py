"""Which layers of a model are weight matmuls, the default plan, and applying a plan.

``lowprec.convert`` (``conversion``) and the planner both build on this module; it
imports nothing of the planner, so every import in the package sits at module top and
the import graph has no cycle.

Which modules (``weight_matmuls``): every module that multiplies by a weight it owns is
listed in the plan, under its qualified name, with its precisions or the reason it is
untouched. Converted are

* ``nn.Linear`` (exactly that type) -> ``lowprec.Linear``;
* ``transformers``' ``Conv1D`` (GPT-2 family, weight ``[K, N]``) -> ``lowprec.conv1d.Conv1D``
  with the same numerics (the blocks run along the contraction K);
* groups of experts (3-D expert weights in a layout an adapter of ``lowprec.moe``
  recognises) -> ``lowprec.moe.GroupedExperts``; each projection (``gate_up_proj``,
  ``down_proj``) is one plan entry covering all E experts (one precision choice for all
  experts of a layer), with top_k x N x K multiply-adds per token.

Untouched, listed with the reason: MoE routers (kept BF16 on purpose, see
``lowprec.moe``; a router that is an ``nn.Linear`` is converted but forced BF16 with the
same reason), subclasses of ``nn.Linear`` (their forward may do something else;
``nn.MultiheadAttention``'s ``out_proj`` is one, and MHA never calls its forward), and
any other module owning a 2-D or larger weight (``nn.MultiheadAttention``'s in_proj,
convolutions, expert weights in an unknown layout). ``convert`` warns once, listing
these, except the routers. Embeddings are lookups, not matmuls, and are not listed; a
linear layer whose weight is an embedding's (a tied LM head) is one entry, and its
reason names the embedding.

FLOPs shares (``LayerPlan.flops_share``) are each entry's share of the per-token
multiply-adds of all entries, untouched ones included, so ``plan.summary()`` is the
share of all the model's weight matmuls.

The default plan (no budget, no plan given):

* Block lists are the ``nn.ModuleList`` or ``nn.Sequential`` whose children (at least
  one) are all of one class, each a composite module holding a converted kind of layer
  (so a Sequential of bare Linears is not a block list), and which lie in no other
  block list: every such list counts (encoder and decoder, vision and text towers),
  a list of experts inside a block does not.
* In each list of L blocks, the last ``max(1, round(0.15 * L))`` stay BF16 (NUMERICS 7),
  and so do layers outside every block list (an ``nn.Linear`` LM head, input
  projections): the NVFP4 recipe quantizes the block GEMMs only. Without block lists
  every layer takes the recipe. ``LayerPlan.block_list`` names a layer's list.
* A layer whose K or N is not a multiple of 16 stays BF16 with that reason, and so does
  a layer for which ``filter_fn(module, fqn)`` is False (reason ``"filtered"``). The
  filter takes the module first and its qualified name second, torchao's order
  (``module_filter_fn(module, fqn)``), so a torchao user's filter works as written; a
  filter that fails on that order (TypeError, AttributeError) or returns anything but
  a bool is refused, naming the layer (``keep_layer``).

Every planned layer becomes a lowprec module (a BF16 one quantizes nothing), so applying
another plan later only changes recipes: parameters, their optimizer state and the module
objects stay as they are.
"""

import dataclasses

import numpy
import torch
from torch import nn

from lowprec.conv1d import Conv1D, is_conv1d
from lowprec.linear_layer import Linear, check_nvfp4_shape
from lowprec.moe import (
    ROUTER_REASON,
    GroupedExperts,
    experts_adapter,
    find_top_k,
    has_expert_weights,
    is_router,
)
from lowprec.plan import LayerPlan, Plan
from lowprec.recipe import Recipe, shape_problem

BF16_TAIL_FRACTION = 0.15
CONVERTED_KINDS = ("linear", "conv1d", "experts")


@dataclasses.dataclass
class WeightMatmul:
    """One weight a model multiplies by, as ``convert`` sees it.

    ``name``: the plan name; ``module``: the module holding the weight; ``kind``: one of
    ``lowprec.plan.KINDS``; ``shape``: the linear weight's (N, K) (one expert's);
    ``reason``: why it must stay BF16 (forced or untouched), else None; ``experts``:
    ``[E, top_k]`` for experts; ``warn``: an untouched module ``convert`` warns about;
    ``tied_to``: the embedding whose weight a linear layer shares (a tied LM head).
    """

    name: str
    module: nn.Module
    kind: str
    shape: tuple
    reason: str | None = None
    experts: list | None = None
    warn: bool = False
    tied_to: str | None = None

    @property
    def macs_per_token(self):
        return self.shape[0] * self.shape[1] * (self.experts[1] if self.experts else 1)


def _is_linear(module):
    return type(module) is nn.Linear or isinstance(module, Linear)


def _is_converted_kind(module):
    return _is_linear(module) or is_conv1d(module) or experts_adapter(module) is not None


def _embedding_names(model):
    """``{id(weight): embedding name}`` of every embedding's weight."""
    return {id(m.weight): name for name, m in model.named_modules()
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}


def _parent(model, name):
    return model.get_submodule(name.rsplit(".", 1)[0] if "." in name else "")


def _experts_entries(model, name, module, filter_fn):
    adapter = experts_adapter(module)
    top_k = find_top_k(_parent(model, name)) if name else None
    if adapter is None or top_k is None:
        why = ("expert weights in a layout no lowprec.moe adapter knows" if adapter is None
               else "experts whose top_k (on the MoE block or its router) is unknown")
        return [_untouched(name, module, f"untouched: {why}", warn=True)]
    out = []
    for tensor in adapter.tensors:
        weight = getattr(module, tensor)
        e, n, k = weight.shape
        full = f"{name}.{tensor}"
        reason = shape_problem(n, k)
        if reason is None and not keep_layer(filter_fn, module, full):
            reason = "filtered"
        out.append(WeightMatmul(full, module, "experts", (n, k), reason, [e, top_k]))
    return out


FILTER_SIGNATURE = "filter_fn(module, fqn) -> bool"


def _is_bool(value):
    return isinstance(value, (bool, numpy.bool_))


def keep_layer(filter_fn, module, fqn):
    """``filter_fn(module, fqn)``, checked: True keeps the layer eligible for low precision.

    A filter written for the other argument order, ``(name, module)``, shows itself by
    failing on a string method or operator applied to the module (TypeError,
    AttributeError) or by returning something that is not a bool; both are refused
    here rather than read as "keep BF16", which used to make every layer BF16 silently.

    Raises:
        TypeError: naming the layer, what the filter raised or returned, and the
        signature lowprec calls (``FILTER_SIGNATURE``).
    """
    if filter_fn is None:
        return True
    where = f"on layer {fqn!r} ({type(module).__name__})"
    try:
        keep = filter_fn(module, fqn)
    except (TypeError, AttributeError) as err:
        raise TypeError(f"filter_fn raised {type(err).__name__}: {err} {where}; lowprec "
                        f"calls {FILTER_SIGNATURE} (torchao's order: the module first, its "
                        f"qualified name second): a filter written as filter_fn(name, "
                        f"module) must swap its arguments") from err
    if not _is_bool(keep):
        raise TypeError(f"filter_fn returned {keep!r} ({type(keep).__name__}) {where}; it "
                        f"must return a bool: lowprec calls {FILTER_SIGNATURE} (torchao's "
                        f"order; a filter written as filter_fn(name, module) must swap its "
                        f"arguments)")
    return bool(keep)


def _untouched(name, module, reason, warn):
    weights = [p for p in module.parameters(recurse=False) if p.dim() >= 2]
    n = sum(p.shape[0] for p in weights)
    k = weights[0][0].numel() if weights else 0
    return WeightMatmul(name, module, "untouched", (n, k), reason, warn=warn)


def _is_linear_router(model, name, n_out):
    """A linear router (older MoE layouts): its parent holds ``experts``, and it scores
    each of them (N = the number of experts)."""
    if not name:
        return False
    experts = getattr(_parent(model, name), "experts", None)
    if isinstance(experts, nn.ModuleList):
        return n_out == len(experts)
    weight = getattr(experts, "gate_up_proj", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 3 and n_out == weight.shape[0]


def weight_matmuls(model, filter_fn=None):
    """Every weight matmul of ``model`` in model order, as ``WeightMatmul`` entries.

    See the module docstring for what is converted and what is untouched. An untouched
    module with several 2-D weights (MHA's q/k/v) is one entry whose N sums them.
    """
    embeddings = _embedding_names(model)
    out = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            continue
        if _is_linear(module) or is_conv1d(module):
            kind = "linear" if _is_linear(module) else "conv1d"
            n, k = _module_shape(module, None)
            reason = ROUTER_REASON if _is_linear_router(model, name, n) else shape_problem(n, k)
            if reason is None and not keep_layer(filter_fn, module, name):
                reason = "filtered"
            entry = WeightMatmul(name, module, kind, (n, k), reason)
            if id(module.weight) in embeddings:
                entry.tied_to = embeddings[id(module.weight)]
            out.append(entry)
        elif isinstance(module, nn.Linear):
            out.append(_untouched(name, module, f"untouched: {type(module).__name__} is a "
                                  f"subclass of nn.Linear (its forward may differ)", True))
        elif has_expert_weights(module):
            out.extend(_experts_entries(model, name, module, filter_fn))
        elif any(p.dim() >= 2 for p in module.parameters(recurse=False)):
            if is_router(module):
                out.append(_untouched(name, module, ROUTER_REASON, warn=False))
            else:
                out.append(_untouched(name, module, f"untouched: lowprec does not convert "
                                      f"{type(module).__name__}", warn=True))
    return out


def candidate_layers(model, filter_fn=None):
    """The layers a plan can quantize (linear, Conv1D, expert projections), model order.

    Returns:
        list of ``(name, module, forced_reason)``; ``forced_reason`` is None, or why the
        layer must stay BF16 (a shape NVFP4 and FP8 GEMMs cannot take, or ``"filtered"``).
        For an expert projection ``name`` is ``<experts module>.<tensor>`` and
        ``module`` the experts module.
    """
    return [(e.name, e.module, e.reason) for e in weight_matmuls(model, filter_fn)
            if e.kind in CONVERTED_KINDS]


def _is_block_list(module):
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
        return False
    if len({type(child) for child in module}) != 1:
        return False
    return all(not _is_linear(child) and not is_conv1d(child)
               and any(_is_converted_kind(m) for m in child.modules())
               for child in module)


def find_block_lists(model):
    """``[(name, container)]`` of every block list in no other one (module docstring)."""
    found = []
    for name, module in model.named_modules():            # outer lists come first
        inside = any(outer == "" or name.startswith(f"{outer}.") for outer, _ in found)
        if not inside and _is_block_list(module):
            found.append((name, module))
    return found


def _tail(n_blocks):
    return max(1, int(BF16_TAIL_FRACTION * n_blocks + 0.5))


def _block_of(layer_name, block_lists):
    """``(list name, block index, list length)`` of the block holding a layer, or None."""
    for list_name, container in block_lists:
        prefix = f"{list_name}." if list_name else ""
        if not layer_name.startswith(prefix):
            continue
        head = layer_name[len(prefix):].split(".", 1)[0]
        if head.isdigit() and int(head) < len(container):
            return list_name, int(head), len(container)
    return None


def _default_choice(entry, where, have_lists):
    """``(use the recipe?, reason)`` of one entry under the default rule."""
    if entry.reason is not None:
        return False, entry.reason
    if not have_lists:
        return True, "default recipe (no repeated blocks found)"
    if where is None:
        return False, "outside the repeated block lists (e.g. LM head)"
    list_name, index, n_blocks = where
    n_tail = _tail(n_blocks)
    if index >= n_blocks - n_tail:
        return False, (f"in the last {n_tail} of {n_blocks} blocks of '{list_name}' "
                       f"(~{BF16_TAIL_FRACTION:.0%} kept BF16)")
    return True, "default recipe"


def _with_tie(reason, entry):
    if entry.tied_to is None:
        return reason
    return f"{reason}; weight tied to embedding '{entry.tied_to}'"


def _layer_plan(entry, precisions, reason, where, total):
    return LayerPlan(entry.name, entry.shape, *precisions, reason=_with_tie(reason, entry),
                     flops_share=entry.macs_per_token / total, kind=entry.kind,
                     block_list=where[0] if where else None, experts=entry.experts)


def default_plan(model, recipe=None, filter_fn=None):
    """The plan ``convert`` applies when given neither a budget nor a plan."""
    base = Recipe() if recipe is None else recipe
    entries = weight_matmuls(model, filter_fn)
    block_lists = find_block_lists(model)
    meta = {"planner": "default", "recipe": base.to_dict(),
            "block_lists": {name: [len(c), _tail(len(c))] for name, c in block_lists}}
    total = sum(e.macs_per_token for e in entries) or 1
    layers = []
    for entry in entries:
        where = _block_of(entry.name, block_lists)
        use_base, reason = _default_choice(entry, where, bool(block_lists))
        precisions = base.precisions() if use_base else ("bf16",) * 3
        layers.append(_layer_plan(entry, precisions, reason, where, total))
    return Plan(layers, meta)


def complete_plan(plan, model, filter_fn=None):
    """A planner's plan plus the untouched modules (BF16 with the reason), each entry
    with its kind and block list, and FLOPs shares over all of them (per-token MACs)."""
    entries = weight_matmuls(model, filter_fn)
    block_lists = find_block_lists(model)
    total = sum(e.macs_per_token for e in entries) or 1
    layers = []
    for entry in entries:
        where = _block_of(entry.name, block_lists)
        if entry.name in plan:
            planned = plan[entry.name]
            layer = _layer_plan(entry, planned.precisions(), planned.reason, where, total)
            layer.cost, layer.stats = planned.cost, planned.stats
        elif entry.kind == "untouched":
            layer = _layer_plan(entry, ("bf16",) * 3, entry.reason, where, total)
        else:                       # a layer the planner left out stays as it is
            continue
        layers.append(layer)
    return Plan(layers, plan.meta)


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


def _module_shape(module, tensor):
    """``(N, K)`` of the linear weight a module (or one expert of ``tensor``) multiplies by."""
    if tensor is not None:
        return tuple(getattr(module, tensor).shape[1:])
    if isinstance(module, Conv1D):
        return module.linear_shape
    if is_conv1d(module):
        return (module.nf, module.nx)
    return tuple(module.weight.shape)


def _weight(module, tensor):
    return getattr(module, tensor) if tensor is not None else module.weight


QUANTIZABLE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_weight_dtype(name, weight, planned=False):
    """Refuse a weight the quantize ops cannot take, at ``convert`` rather than inside
    ``quantize_row_col`` at the first forward (which names neither layer nor fix).

    ``planned``: the layer is a free choice of the planner (it may get a quantized
    recipe), not one a plan gives a quantized recipe.
    """
    if weight.dtype in QUANTIZABLE_DTYPES:
        return
    gets = "may get a quantized recipe from the planner" if planned else \
        "gets a quantized recipe"
    raise ValueError(f"layer {name!r} {gets} but its weight is {weight.dtype}; the "
                     f"quantized GEMMs take float32, bfloat16 or float16: convert the "
                     f"model first with model.float() or model.bfloat16(), or keep this "
                     f"layer BF16 (filter_fn=lambda module, fqn: fqn != {name!r})")


def _current_recipe(module, tensor):
    if isinstance(module, GroupedExperts):
        return module.recipes[tensor]
    return module.recipe if isinstance(module, (Linear, Conv1D)) else Recipe()


def apply_plan(model, plan, recipe=None):
    """Give every layer of ``plan`` its precisions; returns the (possibly new) root.

    An ``nn.Linear`` becomes a ``lowprec.Linear``, a Conv1D a ``lowprec.conv1d.Conv1D``,
    a group of experts a ``GroupedExperts``, each sharing the original's Parameters; a
    module converted before gets a new recipe in place. Untouched entries are skipped.
    The switches (RHT, SR, 2-D, signs) come from ``recipe``, else from the layer's current
    recipe, else the defaults. Everything is validated before anything changes.

    Raises:
        KeyError: a layer name not in the model. TypeError: not a convertible layer.
        ValueError: a shape that differs from the plan's, or NVFP4 on a bad shape.
    """
    resolved = {}                     # module -> {tensor or None: (name, recipe)}
    for layer in plan:
        if layer.kind == "untouched":
            continue
        module, tensor = _resolve(model, layer)
        if tensor is None and not (_is_linear(module) or is_conv1d(module)):
            raise TypeError(f"plan layer {layer.name!r} is a {type(module).__name__}; only "
                            f"nn.Linear, Conv1D, expert projections and their lowprec "
                            f"forms can be planned")
        shape = _module_shape(module, tensor)
        if shape != layer.shape:
            raise ValueError(f"plan layer {layer.name!r} has shape {layer.shape} but the "
                             f"module's weight is {shape} (as a linear weight (N, K))")
        new_recipe = layer.recipe(recipe or _current_recipe(module, tensor))
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


