"""Checks of the planner's and convert's options, run before any work.

Gathering statistics takes seconds to minutes and a demo trains for minutes, so a budget
of 2 or a misspelt budget kind must fail at once, not after the work. ``make_plan``
(``builder.check_make_plan_options``, which ``Replanner`` runs at construction and
``convert`` leaves to ``make_plan``) and the ``lowprec`` command call
``check_plan_options`` first; ``ilp.solve``, a public entry point of its own, checks the
budget it is given as it turns it into an exact fraction. Every error names the
offending value. The numeric checks and the errors live in ``budget.py`` (torch-free,
for the ILP) and are re-exported here; this module imports nothing else of the planner.
"""

import torch

from lowprec import backends
from lowprec.planner.budget import (BUDGET_KINDS, BudgetError, OptionError,  # noqa: F401
                                    PlannerError, check_budget, check_budget_kind,
                                    check_gap, check_ties, check_time_limit)
from lowprec.recipe import Recipe


def check_calibration(calibration, who):
    """Refuse a bare tensor as ``calibration``: it iterates over its first dim, so
    ``torch.randn(32, 64)`` would be 32 batches of one row each, never what was meant."""
    if isinstance(calibration, torch.Tensor):
        shape = tuple(calibration.shape)
        count = f"{shape[0]} batches of shape {shape[1:]}" if shape else "nothing"
        raise TypeError(f"{who}: calibration is a bare tensor of shape {shape}, which would "
                        f"be read as {count}; wrap it: calibration=[x] for one batch, or a "
                        f"list of batches (e.g. list(x.split(8)), or [(x, y), ...] with a "
                        f"loss_fn), or a callable returning one")


def check_recipe(recipe):
    if recipe is not None and not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a lowprec.Recipe; got {type(recipe).__name__}")
    return recipe


def check_backend(backend, device_type=None):
    """``backend``: ``"auto"`` or a known backend name; with ``device_type``, one that
    runs there (else the error says why not)."""
    known = sorted(backends.BACKEND_MODULES) + ["auto"]
    if not isinstance(backend, str) or backend not in known:
        raise OptionError(f"unknown backend {backend!r}; choose one of {known}")
    if device_type is not None and backend != "auto":
        reason = backends.reason_unavailable(backend, device_type)
        if reason is not None:
            raise OptionError(f"backend {backend!r} cannot run on {device_type} here: {reason}")
    return backend


def check_plan_options(*, budget, budget_kind="nvfp4_fraction", ties=None, recipe=None,
                       time_limit=10.0, gap=0.0, **_ignored):
    """Check every option that can be judged without the model's statistics.

    Returns the budget as a float (numpy scalars and 0-d tensors included). Other
    keyword arguments are accepted and left to their owners, so callers can pass their
    whole option dict.
    """
    value = check_budget(budget, budget_kind)
    check_ties(ties)
    check_recipe(recipe)
    check_time_limit(time_limit)
    check_gap(gap)
    return value
