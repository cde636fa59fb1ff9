"""The planner's numeric options (budget, ties, solver limits) and its errors.

Imports nothing of lowprec and no torch: the ILP (``ilp.py``) checks its budget with
these, and runs where torch is absent (the PuLP 4 check of CI). ``options.py`` adds the
checks that need the rest of lowprec.
"""

import math
import numbers

BUDGET_KINDS = ("nvfp4_fraction", "time")


class PlannerError(RuntimeError):
    """The planner could not produce a plan (solver failure, bad input)."""


class BudgetError(PlannerError, ValueError):
    """The budget is out of range or cannot be met; the message names the reachable range."""


class OptionError(ValueError):
    """An option of convert / the planner / the CLI is malformed (names the value)."""


def as_number(value, name):
    """``value`` as a Python float: int/float, numpy scalars and 0-d tensors or arrays
    are accepted; bools, strings, None and tensors with more than one element are not."""
    if hasattr(value, "item") and hasattr(value, "dtype"):       # torch or numpy
        if getattr(value, "ndim", None) != 0:
            raise OptionError(f"{name} must be a number; got an array of shape "
                              f"{tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(f"{name} must be a number; got {value!r}")
    return float(value)


def check_budget(budget, budget_kind="nvfp4_fraction"):
    """The budget as a float; BudgetError unless it is finite and in its kind's range.

    ``"nvfp4_fraction"``: the least NVFP4 share of linear FLOPs, in [0, 1].
    ``"time"``: the most time relative to all-BF16, > 0. Whether the model can reach it
    is only known after its statistics (``ilp.solve``).
    """
    check_budget_kind(budget_kind)
    try:
        value = as_number(budget, "budget")
    except OptionError as err:
        raise BudgetError(f"budget must be a finite number; got {budget!r}") from err
    if not math.isfinite(value):
        raise BudgetError(f"budget must be a finite number; got {budget!r}")
    if budget_kind == "nvfp4_fraction" and not 0 <= value <= 1:
        raise BudgetError(f"budget={budget} is out of range: an NVFP4 FLOPs fraction must be "
                          f"in [0, 1]")
    if budget_kind == "time" and value <= 0:
        raise BudgetError(f"budget={budget} is out of range: a relative time must be > 0 "
                          f"(1 = all layers BF16)")
    return value


def check_budget_kind(budget_kind):
    if not isinstance(budget_kind, str) or budget_kind not in BUDGET_KINDS:
        raise OptionError(f"budget_kind must be one of {BUDGET_KINDS}; got {budget_kind!r}")
    return budget_kind


def check_ties(ties):
    """``ties``: None or groups (lists/tuples) of layer names, no layer in two groups.

    Whether the names are layers of the model is checked against the candidates
    (``builder``), also before any statistics.
    """
    if ties is None:
        return None
    if isinstance(ties, (str, bytes)) or not isinstance(ties, (list, tuple)):
        raise OptionError(f"ties must be a list of groups of layer names, e.g. "
                          f"[['q', 'k', 'v']]; got {ties!r}")
    owner = {}
    for group in ties:
        if isinstance(group, (str, bytes)) or not isinstance(group, (list, tuple)) \
                or not group or not all(isinstance(n, str) for n in group):
            raise OptionError(f"each tie group must be a non-empty list of layer names; got "
                              f"{group!r} in ties={ties!r}")
        for name in group:
            if name in owner:
                raise OptionError(f"layer {name!r} is in two tie groups: {owner[name]} and "
                                  f"{list(group)}")
            owner[name] = list(group)
    return ties


def check_time_limit(time_limit):
    """Seconds the ILP solver may take: None (no limit) or a finite number > 0."""
    if time_limit is None:
        return None
    value = as_number(time_limit, "time_limit")
    if not (math.isfinite(value) and value > 0):
        raise OptionError(f"time_limit must be a positive number of seconds; got "
                          f"{time_limit!r}")
    return value


def check_gap(gap):
    """Relative MIP gap at which the solver may stop: a finite number >= 0."""
    value = as_number(gap, "gap")
    if not (math.isfinite(value) and value >= 0):
        raise OptionError(f"gap must be a finite number >= 0; got {gap!r}")
    return value
