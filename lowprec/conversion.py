"""convert / unconvert: swap a model's weight matmuls for lowprec's and back.

What is converted and what stays untouched is described in ``lowprec.discovery``, which
finds the layers (once per call), the default plan in ``lowprec.policy``, applying a
plan in ``lowprec.module_swap``; with a budget, ``lowprec.planner.make_plan`` chooses the
precisions. This module sits above them all.

Every planned layer becomes a lowprec module (a BF16 one quantizes nothing), so applying
another plan later only changes recipes: parameters, their optimizer state and the module
objects stay as they are. Convert before wrapping the model in DDP, FSDP
(``fully_shard``) or ``torch.compile``.
"""

import warnings

from lowprec import planner
from lowprec.conv1d import Conv1D
from lowprec.discovery import FILTER_SIGNATURE, find_layers
from lowprec.linear_layer import Linear
from lowprec.module_swap import apply_plan, swap_module
from lowprec.moe import ROUTER_REASON, GroupedExperts
from lowprec.names import shape_problem
from lowprec.plan import Plan
from lowprec.planner import options
from lowprec.policy import complete_plan, default_plan


def _original(module):
    return module.to_linear() if isinstance(module, Linear) else module.to_original()


def _warn_untouched(plan):
    """One warning listing the weight-matmul modules convert could not handle."""
    skipped = [f"{layer.name} ({layer.reason})" for layer in plan
               if layer.kind == "untouched" and layer.reason != ROUTER_REASON]
    if skipped:
        warnings.warn(f"lowprec.convert left {len(skipped)} weight-matmul module(s) as they "
                      f"are: " + "; ".join(skipped), stacklevel=3)


def convert(model, budget=None, *, recipe=None, calibration=None, optimizer=None,
            loss_fn=None, filter_fn=None, plan=None, **plan_kwargs):
    """Swap ``model``'s weight matmuls for lowprec's in place, as planned.

    Args:
        model: an ``nn.Module``.
        budget: None for the default plan (``lowprec.policy``); else hand planning to
            ``lowprec.planner.make_plan`` under this budget (needs ``calibration``);
            each expert projection is one planning unit (all its experts alike).
        recipe: the base recipe (its switches, and the precisions the default plan
            gives); None means ``Recipe()`` (NUMERICS 7). With ``plan``: None applies
            each ``LayerPlan.recipe`` as it is, a recipe gives its switches to the
            plan's precisions.
        calibration, optimizer, loss_fn: passed to the planner with ``budget`` (and
            refused without one); ``loss_fn(model, batch) -> scalar tensor``, default
            the model's own output (``lowprec.planner.default_loss``).
        filter_fn: ``filter_fn(module, fqn) -> bool`` (torchao's order: the module, then
            its qualified name); False keeps a layer BF16. A filter that raises
            TypeError/AttributeError or returns a non-bool is refused (TypeError naming
            the layer): it is most likely written for the order ``(name, module)``.
        plan: a ``Plan`` to apply as it is (also to an already converted model, to
            re-plan without touching parameters or optimizer state).
        **plan_kwargs: further options of ``make_plan`` (e.g. ``budget_kind="time"``,
            tie groups, ``progress``); only with ``budget``.

    Returns:
        The model (a new module only if ``model`` itself is an ``nn.Linear``), with the
        applied Plan at ``model.lowprec_plan``. Warns once (UserWarning) listing the
        weight-matmul modules left untouched, routers excepted, and once when the
        default or planned plan puts no layer in low precision, counting why.

    Raises:
        TypeError: ``calibration`` a bare tensor; a filter of the wrong signature.
        ValueError: a layer that would run quantized GEMMs on a weight that is not
        float32, bfloat16 or float16 (e.g. after ``model.double()``).
    """
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
    found = find_layers(model, filter_fn)          # once: plan, planner and warnings
    if budget is not None:
        # make_plan checks the budget, the recipe and every other planning input before
        # any work (the statistics take minutes on a real model), so convert does not.
        planned = planner.make_plan(model, budget=budget, calibration=calibration,
                                    optimizer=optimizer, loss_fn=loss_fn, recipe=recipe,
                                    candidates=found.candidates(), **plan_kwargs)
        plan = complete_plan(planned, found)
        _warn_nothing_quantized(plan, "the planner's plan")
    else:
        options.check_recipe(recipe)
        if plan is None:
            plan = default_plan(found, recipe)
            _warn_nothing_quantized(plan, "the default plan")
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a lowprec.Plan; got {type(plan).__name__}")
    _warn_unplanned(found, plan)
    model = apply_plan(model, plan, recipe)
    model.lowprec_plan = plan
    _warn_untouched(plan)
    return model


def _bf16_cause(layer):
    """Why one plan entry runs no quantized GEMM, in a few words (for the warning)."""
    reason = (layer.reason or "").removeprefix("forced bf16: ")
    if layer.kind == "untouched":
        return "left as they are (not convertible)" if reason != ROUTER_REASON else \
            "MoE routers (kept BF16 on purpose)"
    if reason.startswith("filtered"):
        return f"filtered by filter_fn (it returned False; {FILTER_SIGNATURE})"
    if shape_problem(*layer.shape) is not None:
        return "shape (K or N) not a multiple of 16"
    if reason == ROUTER_REASON:
        return "MoE routers (kept BF16 on purpose)"
    if reason.startswith("ILP"):
        return "the planner's choice under the budget"
    return reason or "no reason given"


def _warn_nothing_quantized(plan, which):
    """One warning when ``plan`` runs every layer in high precision: the cause (a filter
    of the wrong meaning, odd shapes, a one-block model) is then easy to miss."""
    if any(layer.precisions() != ("bf16",) * 3 for layer in plan):
        return
    causes = {}
    for layer in plan:
        cause = _bf16_cause(layer)
        causes[cause] = causes.get(cause, 0) + 1
    why = "; ".join(f"{count} x {cause}" for cause, count in
                    sorted(causes.items(), key=lambda item: -item[1]))
    warnings.warn(f"lowprec.convert: {which} leaves no layer in low precision (every GEMM "
                  f"runs in high precision): " + (why or "the model has no linear layer"),
                  UserWarning, stacklevel=3)


def _warn_unplanned(found, plan):
    """Warn naming the model's linear layers ``plan`` leaves out (they stay as they are)."""
    missing = [name for name, _, _ in found.candidates() if name not in plan]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)"
                                           if len(missing) > 10 else "")
        warnings.warn(f"the plan has no entry for {len(missing)} linear layer(s) of the model: "
                      f"{shown}; they keep their current precision (an nn.Linear stays an "
                      f"unconverted nn.Linear)", UserWarning, stacklevel=3)


def unconvert(model):
    """Give back the original modules, holding the same Parameters: ``nn.Linear`` for a
    ``lowprec.Linear``, the original class for a Conv1D and for a group of experts.

    Returns the model (a new module if ``model`` itself is a converted one).
    """
    if isinstance(model, (Linear, Conv1D, GroupedExperts)):
        return _original(model)
    for module in list(model.modules()):
        if isinstance(module, (Linear, Conv1D, GroupedExperts)):
            swap_module(model, module, _original(module))
    if "lowprec_plan" in model.__dict__:
        del model.lowprec_plan
    return model
