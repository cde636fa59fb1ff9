"""convert / unconvert: swap a model's ``nn.Linear``s for ``lowprec.Linear`` and back.

Which layers: exactly the modules of type ``nn.Linear`` (or already ``lowprec.Linear``).
Subclasses of ``nn.Linear`` are left alone, since their forward may do something else
(``nn.MultiheadAttention``'s ``out_proj`` is such a subclass, and MHA never calls its
forward). Embeddings, norms, attention BMMs and heads that are not ``nn.Linear`` are
never touched.

The default plan (no budget, no plan given):

* Repeated transformer blocks are the ``nn.ModuleList`` or ``nn.Sequential`` whose
  children (at least one) are all of one class, each a composite module holding some
  ``nn.Linear`` (so a Sequential of bare Linears is not a block list), and which holds
  the most parameters among such lists (parameters rather than children, so that a
  list of MoE experts inside a block does not win over the list of blocks).
* The last ``max(1, round(0.15 * L))`` of its L blocks stay BF16 (NUMERICS 7), and so do
  linear layers outside the blocks (an ``nn.Linear`` LM head, input projections): the
  NVFP4 recipe quantizes the block GEMMs only. Without repeated blocks every layer
  takes the recipe.
* A layer whose K or N is not a multiple of 16 stays BF16 with that reason, and so does
  a layer for which ``filter_fn(name, module)`` is False (reason ``"filtered"``).

Every planned layer becomes a ``lowprec.Linear`` (a BF16 one quantizes nothing and runs
``F.linear``), so applying another plan later only changes recipes: parameters, their
optimizer state and the module objects stay as they are. Convert before wrapping the
model in DDP, FSDP (``fully_shard``) or ``torch.compile``.
"""

import warnings

from torch import nn

from lowprec.linear import NVFP4_BLOCK, Linear, check_nvfp4_shape
from lowprec.plan import LayerPlan, Plan
from lowprec.recipe import Recipe

BF16_TAIL_FRACTION = 0.15


def _is_convertible(module):
    return type(module) is nn.Linear or isinstance(module, Linear)


def candidate_layers(model, filter_fn=None):
    """The linear layers a plan covers, in model order.

    Returns:
        list of ``(name, module, forced_reason)``; ``forced_reason`` is None, or why the
        layer must stay BF16 (a shape NVFP4 and FP8 GEMMs cannot take, or ``"filtered"``).
    """
    out = []
    for name, module in model.named_modules():
        if not _is_convertible(module):
            continue
        n, k = module.weight.shape
        forced = None
        if k % NVFP4_BLOCK or n % NVFP4_BLOCK:
            forced = (f"shape (N={n}, K={k}): nvfp4 and fp8 GEMMs need K and N multiples "
                      f"of {NVFP4_BLOCK}")
        elif filter_fn is not None and not filter_fn(name, module):
            forced = "filtered"
        out.append((name, module, forced))
    return out


def _is_block_list(module):
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
        return False
    if len({type(child) for child in module}) != 1:
        return False
    return all(not isinstance(child, nn.Linear)
               and any(isinstance(m, nn.Linear) for m in child.modules())
               for child in module)


def find_repeated_blocks(model):
    """``(name, container)`` of the repeated transformer blocks, or None (see module doc)."""
    best, best_params = None, -1
    for name, module in model.named_modules():
        if not _is_block_list(module):
            continue
        params = sum(p.numel() for p in module.parameters())
        if params > best_params:            # ties keep the first (outermost) container
            best, best_params = (name, module), params
    return best


def _block_index(layer_name, blocks_name, n_blocks):
    """Index of the block holding ``layer_name``, or None if it is outside the blocks."""
    prefix = f"{blocks_name}." if blocks_name else ""
    if not layer_name.startswith(prefix):
        return None
    head = layer_name[len(prefix):].split(".", 1)[0]
    if head.isdigit() and int(head) < n_blocks:
        return int(head)
    return None


def default_plan(model, recipe=None, filter_fn=None):
    """The plan ``convert`` applies when given neither a budget nor a plan."""
    base = Recipe() if recipe is None else recipe
    candidates = candidate_layers(model, filter_fn)
    blocks = find_repeated_blocks(model)
    meta = {"planner": "default", "recipe": base.to_dict()}
    if blocks is not None:
        blocks_name, container = blocks
        n_blocks = len(container)
        n_tail = max(1, int(BF16_TAIL_FRACTION * n_blocks + 0.5))
        meta.update(blocks=blocks_name, n_blocks=n_blocks, bf16_tail_blocks=n_tail)
    total = sum(m.weight.shape[0] * m.weight.shape[1] for _, m, _ in candidates) or 1
    layers = []
    for name, module, forced in candidates:
        n, k = module.weight.shape
        use_base, reason = False, forced
        if forced is None and blocks is None:
            use_base, reason = True, "default recipe (no repeated blocks found)"
        elif forced is None:
            index = _block_index(name, blocks_name, n_blocks)
            if index is None:
                reason = f"outside the repeated blocks '{blocks_name}' (e.g. LM head)"
            elif index >= n_blocks - n_tail:
                reason = (f"in the last {n_tail} of {n_blocks} blocks "
                          f"(~{BF16_TAIL_FRACTION:.0%} kept BF16)")
            else:
                use_base, reason = True, "default recipe"
        precisions = base.precisions() if use_base else ("bf16",) * 3
        layers.append(LayerPlan(name, (n, k), *precisions, reason=reason,
                                flops_share=n * k / total))
    return Plan(layers, meta)


def apply_plan(model, plan, recipe=None):
    """Give every layer of ``plan`` its precisions; returns the (possibly new) root.

    An ``nn.Linear`` becomes a ``lowprec.Linear`` sharing its Parameters; a
    ``lowprec.Linear`` gets a new recipe in place. The switches (RHT, SR, 2-D, signs)
    come from ``recipe``, else from the layer's current recipe, else the defaults.
    Everything is validated before anything changes.

    Raises:
        KeyError: a layer name not in the model. TypeError: not a convertible linear.
        ValueError: a shape that differs from the plan's, or NVFP4 on a bad shape.
    """
    resolved = []
    for layer in plan:
        try:
            module = model.get_submodule(layer.name)
        except AttributeError:
            raise KeyError(f"plan layer {layer.name!r} is not a submodule of the model") \
                from None
        if not _is_convertible(module):
            raise TypeError(f"plan layer {layer.name!r} is a {type(module).__name__}; "
                            f"only nn.Linear and lowprec.Linear can be planned")
        if tuple(module.weight.shape) != layer.shape:
            raise ValueError(f"plan layer {layer.name!r} has shape {layer.shape} but the "
                             f"module's weight is {tuple(module.weight.shape)}")
        base = recipe or (module.recipe if isinstance(module, Linear) else Recipe())
        new_recipe = layer.recipe(base)
        check_nvfp4_shape(module.weight.shape, new_recipe, layer.name)
        resolved.append((layer.name, module, new_recipe))

    for name, module, new_recipe in resolved:
        if isinstance(module, Linear):
            module.recipe = new_recipe
            module.lowprec_name = name
            continue
        new = Linear.from_linear(module, new_recipe)
        new.lowprec_name = name
        if module is model:
            model = new
        else:
            _swap(model, module, new)
    return model


def _swap(model, old, new):
    """Put ``new`` wherever ``old`` is registered (a module may be registered twice)."""
    for parent in model.modules():
        for key, child in parent._modules.items():
            if child is old:
                parent._modules[key] = new


def convert(model, budget=None, *, recipe=None, calibration=None, optimizer=None,
            loss_fn=None, filter_fn=None, plan=None, **plan_kwargs):
    """Swap ``model``'s ``nn.Linear``s for ``lowprec.Linear`` in place, as planned.

    Args:
        model: an ``nn.Module``.
        budget: None for the default plan (module docstring); else hand planning to
            ``lowprec.planner.make_plan`` under this budget (needs ``calibration``).
        recipe: the base recipe (its switches, and the precisions the default plan
            gives); None means ``Recipe()`` (NUMERICS 7).
        calibration, optimizer, loss_fn: passed to the planner with ``budget`` (and
            refused without one); ``loss_fn(model, batch) -> scalar tensor``, default
            the model's own output (``lowprec.planner.default_loss``).
        filter_fn: ``filter_fn(name, module) -> bool``; False keeps a layer BF16.
        plan: a ``Plan`` to apply as it is (also to an already converted model, to
            re-plan without touching parameters or optimizer state).
        **plan_kwargs: further options of ``make_plan`` (e.g. ``budget_kind="time"``,
            tie groups, ``progress``); only with ``budget``.

    Returns:
        The model (a new module only if ``model`` itself is an ``nn.Linear``), with the
        applied Plan at ``model.lowprec_plan``.
    """
    from lowprec.planner import options          # no planner code runs before this check

    if budget is not None and plan is not None:
        raise ValueError("convert takes a budget (to plan) or a plan (to apply), not both")
    if plan_kwargs and budget is None:
        raise TypeError(f"planner options {sorted(plan_kwargs)} need a budget")
    planner_inputs = [name for name, value in (("calibration", calibration),
                      ("optimizer", optimizer), ("loss_fn", loss_fn)) if value is not None]
    if planner_inputs and budget is None:
        # Refused rather than ignored: the caller meant to plan and would get another plan.
        instead = "the given plan" if plan is not None else "the default plan"
        raise TypeError(f"convert got {', '.join(planner_inputs)} but no budget: they are "
                        f"only used to plan under a budget (budget=...); pass one, or leave "
                        f"them out for {instead}")
    options.check_recipe(recipe)
    if budget is not None:
        budget = options.check_plan_options(budget=budget, **plan_kwargs)
        if calibration is None:
            raise ValueError("convert(budget=...) plans from measurements: pass "
                             "calibration=<an iterable of batches>")
        from lowprec.planner import make_plan
        plan = make_plan(model, budget=budget, calibration=calibration,
                         optimizer=optimizer, loss_fn=loss_fn,
                         recipe=Recipe() if recipe is None else recipe,
                         candidates=candidate_layers(model, filter_fn), **plan_kwargs)
    elif plan is None:
        plan = default_plan(model, recipe, filter_fn)
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a lowprec.Plan; got {type(plan).__name__}")
    _warn_unplanned(model, plan, filter_fn)
    model = apply_plan(model, plan, recipe)
    model.lowprec_plan = plan
    return model


def _warn_unplanned(model, plan, filter_fn):
    """Warn naming the model's linear layers ``plan`` leaves out (they stay as they are)."""
    missing = [name for name, _, _ in candidate_layers(model, filter_fn) if name not in plan]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)"
                                           if len(missing) > 10 else "")
        warnings.warn(f"the plan has no entry for {len(missing)} linear layer(s) of the model: "
                      f"{shown}; they keep their current precision (an nn.Linear stays an "
                      f"unconverted nn.Linear)", UserWarning, stacklevel=3)


def unconvert(model):
    """Replace every ``lowprec.Linear`` by an ``nn.Linear`` with the same Parameters.

    Returns the model (a new ``nn.Linear`` if ``model`` itself is a ``lowprec.Linear``).
    """
    if isinstance(model, Linear):
        return model.to_linear()
    for module in list(model.modules()):
        if isinstance(module, Linear):
            _swap(model, module, module.to_linear())
    if "lowprec_plan" in model.__dict__:
        del model.lowprec_plan
    return model
