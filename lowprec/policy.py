"""The precisions ``convert`` gives the layers discovery found: the default rule, or a
planner's plan completed with the modules it does not plan.

The default plan (no budget, no plan given):

* In each block list of L blocks (``discovery.find_block_lists``), the last
  ``max(1, round(0.15 * L))`` stay BF16 (NUMERICS 7), and so do layers outside every
  block list (an ``nn.Linear`` LM head, input projections): the NVFP4 recipe quantizes
  the block GEMMs only. Without block lists every layer takes the recipe.
  ``LayerPlan.block_list`` names a layer's list.
* A layer discovery forces BF16 (a shape the quantized GEMMs cannot take, ``filter_fn``
  returning False, a router) stays BF16 with that reason.

FLOPs shares (``LayerPlan.flops_share``) are each entry's share of the per-token
multiply-adds of all entries, untouched ones included, so ``plan.summary()`` is the
share of all the model's weight matmuls.
"""

from lowprec.plan import LayerPlan, Plan
from lowprec.recipe import Recipe

BF16_TAIL_FRACTION = 0.15


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


def _layer_plan(entry, recipe, reason, where, total):
    return LayerPlan(entry.name, entry.shape, recipe, reason=_with_tie(reason, entry),
                     flops_share=entry.macs_per_token / total, kind=entry.kind,
                     block_list=where[0] if where else None, experts=entry.experts)


def default_plan(found, recipe=None):
    """The plan ``convert`` applies when given neither a budget nor a plan.

    ``found``: the model's ``discovery.find_layers``; ``recipe``: the recipe the default
    rule gives (None: ``Recipe()``); a layer kept BF16 gets its switches, all GEMMs BF16.
    """
    base = Recipe() if recipe is None else recipe
    bf16 = base.replace(fprop="bf16", dgrad="bf16", wgrad="bf16")
    meta = {"planner": "default", "recipe": base.to_dict(),
            "block_lists": {name: [len(c), _tail(len(c))] for name, c in found.block_lists}}
    total = sum(e.macs_per_token for e in found.matmuls) or 1
    layers = []
    for entry in found.matmuls:
        where = _block_of(entry.name, found.block_lists)
        use_base, reason = _default_choice(entry, where, bool(found.block_lists))
        layers.append(_layer_plan(entry, base if use_base else bf16, reason, where, total))
    return Plan(layers, meta)


def complete_plan(plan, found):
    """A planner's plan plus the untouched modules (BF16 with the reason), each entry
    with its kind and block list, and FLOPs shares over all of them (per-token MACs).

    ``found``: the model's ``discovery.find_layers``, with the filter the planner's
    candidates came from. An untouched module gets the plan's switches, all GEMMs BF16.
    """
    total = sum(e.macs_per_token for e in found.matmuls) or 1
    bf16 = plan.base_recipe().replace(fprop="bf16", dgrad="bf16", wgrad="bf16")
    layers = []
    for entry in found.matmuls:
        where = _block_of(entry.name, found.block_lists)
        if entry.name in plan:
            planned = plan[entry.name]
            layer = _layer_plan(entry, planned.recipe, planned.reason, where, total)
            layer.cost, layer.stats = planned.cost, planned.stats
        elif entry.kind == "untouched":
            layer = _layer_plan(entry, bf16, entry.reason, where, total)
        else:                       # a layer the planner left out stays as it is
            continue
        layers.append(layer)
    return Plan(layers, plan.meta)

