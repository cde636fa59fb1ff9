"""Choose one precision per (layer group, GEMM group) by an integer linear program.

The model (after SNIP, arXiv 2602.01410):

- one binary ``x[i, p]`` per choice ``i`` (a tie group of layers times a GEMM group,
  e.g. ``("blocks.0.attn.qkv", "fprop+dgrad")``) and allowed precision ``p``, with
  ``sum_p x[i, p] == 1``. Ties (fprop and dgrad sharing W's quantization; fused QKV or
  gate/up projections sharing one precision) are expressed by the caller by merging what
  must agree into one choice, so they hold by construction. A forced-BF16 layer is a
  choice whose only allowed precision is ``"bf16"`` (a constant, not a variable);
- objective: ``sum_i sum_p cost[i][p] x[i, p]``, the caller's normalised divergences
  (O(1) each), plus an optional switching penalty ``mu * (1 - x[i, previous_i])`` per
  choice that moves away from the previous plan;
- budget, one of
  ``"nvfp4_fraction"`` (default, as in SNIP): ``sum_i flops_i x[i, nvfp4] >= budget * F``
  with ``F`` the FLOPs of all linear-layer GEMMs (forced ones included);
  ``"time"``: ``sum_i sum_p flops_i t_p x[i, p] <= budget * F * t_bf16``, a relative
  time cost with the device's relative time per FLOP ``t_p`` (``cost.DeviceCost``).

Note: under ``"nvfp4_fraction"`` FP8 costs divergence and buys nothing, so the optimum
never uses it; use ``"time"`` to let FP8 earn its place.

Budgets are checked exactly (integer FLOPs; the budget as the decimal its float prints
as, so 0.9 means 9/10) before and after solving; a solver answer that meets the budget
only within its feasibility tolerance is re-solved with the right-hand side tightened.
"""

import heapq
import math
import time
import warnings
from dataclasses import dataclass, field
from fractions import Fraction

from lowprec.names import PRECISIONS
from lowprec.planner import pulp_compat
from lowprec.planner.budget import (BUDGET_KINDS, BudgetError,  # noqa: F401  (re-exported)
                                    PlannerError, check_budget)
from lowprec.planner.cost import DEFAULT_COSTS
from lowprec.planner.pulp_compat import NoSolverError  # noqa: F401  (re-exported)
MAX_TIGHTENINGS = 3
TOLERANCE_STEP = 2e-7




@dataclass
class Choice:
    """One decision: the precision of one GEMM group of one layer (or tie group).

    Attributes:
        unit: the layer (or tie group) name.
        group: the GEMM group, e.g. ``"fprop+dgrad"`` or ``"wgrad"``.
        flops: FLOPs of the group's GEMMs over all the unit's layers (int).
        cost: ``{precision: objective coefficient}``; the keys are the allowed precisions.
        previous: the precision in the previous plan, for the switching penalty.
    """

    unit: str
    group: str
    flops: int
    cost: dict
    previous: str = None

    @property
    def key(self):
        return (self.unit, self.group)


@dataclass
class Solution:
    """The chosen precisions and what they achieve.

    ``assignment`` maps ``(unit, group)`` to a precision. ``status`` is ``"optimal"`` or
    ``"feasible"`` (time limit reached with a plan; a warning was issued).
    """

    assignment: dict
    objective: float
    status: str
    solver: str
    seconds: float
    nvfp4_fraction: float
    relative_time: float
    budget_range: tuple
    details: dict = field(default_factory=dict)


def _check_choices(choices):
    if not choices:
        raise ValueError("the ILP needs at least one choice (no candidate layers?)")
    seen = set()
    for c in choices:
        if c.key in seen:
            raise ValueError(f"duplicate choice {c.key}: each (unit, group) must appear once")
        seen.add(c.key)
        if not c.cost:
            raise ValueError(f"choice {c.key} allows no precision")
        unknown = [p for p in c.cost if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"choice {c.key} has unknown precisions {unknown}; "
                             f"allowed are {PRECISIONS}")
        bad = {p: v for p, v in c.cost.items() if not math.isfinite(v)}
        if bad:
            raise ValueError(f"choice {c.key} has non-finite costs {bad}")
        if int(c.flops) != c.flops or c.flops < 0:
            raise ValueError(f"choice {c.key} has flops={c.flops!r}; need a non-negative int")
    if sum(c.flops for c in choices) <= 0:
        raise ValueError("the choices have zero FLOPs in total; nothing to budget")


def _time_cost(time_cost):
    if time_cost is None:
        time_cost = DEFAULT_COSTS["blackwell"][0]
    missing = [p for p in PRECISIONS if p not in time_cost]
    if missing:
        raise ValueError(f"time_cost needs a value for each of {PRECISIONS}; missing {missing}")
    return {p: float(time_cost[p]) for p in PRECISIONS}


def achieved(choices, assignment, time_cost=None):
    """``(nvfp4 FLOPs fraction, relative time vs BF16)`` of an assignment, as Fractions."""
    t = _time_cost(time_cost)
    total = sum(c.flops for c in choices)
    nvfp4 = sum(c.flops for c in choices if assignment[c.key] == "nvfp4")
    spent = sum(Fraction(c.flops) * Fraction(t[assignment[c.key]]) for c in choices)
    return Fraction(nvfp4, total), spent / (total * Fraction(t["bf16"]))


def budget_range(choices, budget_kind="nvfp4_fraction", time_cost=None):
    """The reachable ``(low, high)`` of the budget quantity, as floats.

    ``"nvfp4_fraction"``: the NVFP4 share of FLOPs can be anything from the share of
    choices that allow only NVFP4 to the share of those that allow it at all.
    ``"time"``: relative time from all-fastest to all-slowest allowed precisions.
    """
    lo, hi = _exact_range(choices, budget_kind, _time_cost(time_cost))
    return float(lo), float(hi)


def _exact_range(choices, budget_kind, t):
    total = sum(c.flops for c in choices)
    if budget_kind == "nvfp4_fraction":
        lo = sum(c.flops for c in choices if set(c.cost) == {"nvfp4"})
        hi = sum(c.flops for c in choices if "nvfp4" in c.cost)
        return Fraction(lo, total), Fraction(hi, total)
    base = total * Fraction(t["bf16"])
    lo = sum(Fraction(c.flops) * min(Fraction(t[p]) for p in c.cost) for c in choices)
    hi = sum(Fraction(c.flops) * max(Fraction(t[p]) for p in c.cost) for c in choices)
    return lo / base, hi / base


def _describe_range(budget_kind, lo, hi):
    what = ("fraction of linear-layer FLOPs in NVFP4" if budget_kind == "nvfp4_fraction"
            else "time relative to all-BF16")
    return f"reachable {what}: [{float(lo):.6g}, {float(hi):.6g}]"


SNAP = Fraction(1, 10 ** 12)


def _check_budget(budget, budget_kind, lo, hi):
    """The exact budget to meet (a Fraction); BudgetError unless it can be met.

    The budget is taken as the decimal its float prints as (0.9 is 9/10). A budget within
    1e-12 beyond the reachable end (e.g. a rounded-up float of an end like 2/3) is
    snapped to that end.
    """
    try:
        value = check_budget(budget, budget_kind)
    except BudgetError as err:
        raise BudgetError(f"{err} ({_describe_range(budget_kind, lo, hi)})") from None
    # The float's shortest decimal (its repr) is the budget the user wrote: 0.9 means
    # 9/10, not the binary float just above it, which a plan of exactly 9/10 would miss.
    exact = Fraction(repr(value))
    if budget_kind == "nvfp4_fraction":
        if hi < exact <= hi + SNAP:
            return hi
        if exact > hi:
            raise BudgetError(f"budget={budget} cannot be met: "
                              f"{_describe_range(budget_kind, lo, hi)} (layers forced to BF16 "
                              f"or not allowed NVFP4 cap it)")
    else:
        if lo - SNAP <= exact < lo:
            return lo
        if exact < lo:
            raise BudgetError(f"budget={budget} cannot be met: "
                              f"{_describe_range(budget_kind, lo, hi)} (even the fastest "
                              f"allowed precisions take {float(lo):.6g})")
    return exact


def _meets(budget_kind, target, fraction, rel_time):
    if budget_kind == "nvfp4_fraction":
        return fraction >= target
    return rel_time <= target


def objective_value(choices, assignment, switch_penalty=0.0):
    """The ILP objective of an assignment (divergences plus switching penalty)."""
    total = 0.0
    for c in choices:
        p = assignment[c.key]
        total += c.cost[p]
        if switch_penalty and c.previous in c.cost and p != c.previous:
            total += switch_penalty
    return total


def solve(choices, *, budget, budget_kind="nvfp4_fraction", time_cost=None,
          switch_penalty=0.0, solver="auto", time_limit=10.0, gap=0.0, msg=False):
    """Solve the precision ILP.

    Args:
        choices: list of ``Choice``.
        budget: NVFP4 FLOPs fraction in [0, 1] (``"nvfp4_fraction"``) or the maximum
            relative time vs all-BF16 (``"time"``).
        budget_kind: ``"nvfp4_fraction"`` or ``"time"``.
        time_cost: ``{precision: relative time per FLOP}`` (``DeviceCost.time``); default
            the Blackwell ratios. Used by ``"time"`` and reported either way.
        switch_penalty: objective units charged per choice that differs from ``previous``.
        solver: ``"auto"`` (HiGHS via highspy, HiGHS_CMD, then CBC), ``"highs"``,
            ``"highs_cmd"`` or ``"cbc"``.
        time_limit: seconds; the best plan found by then is used with a warning, and
            if the solver found none, a greedy plan that meets the budget (``greedy``).
        gap: relative MIP gap at which the solver may stop (0: prove optimality).
        msg: show the solver's log.

    Returns:
        Solution.

    Raises:
        BudgetError: the budget is out of range or unreachable (names the range).
        NoSolverError: no solver available. PlannerError: the solver failed.
    """
    _check_choices(choices)
    t = _time_cost(time_cost)
    lo, hi = _exact_range(choices, budget_kind, t)
    target = _check_budget(budget, budget_kind, lo, hi)
    start = time.perf_counter()
    pruned = [_prune(c, budget_kind, t, switch_penalty) for c in choices]
    free = [c for c in pruned if len(c.cost) > 1]
    fixed = {c.key: next(iter(c.cost)) for c in pruned if len(c.cost) == 1}
    details = {"variables": sum(len(c.cost) for c in free), "tightenings": 0,
               "pruned": sum(len(c.cost) for c in choices) - sum(len(c.cost) for c in pruned)}
    if not free:
        assignment, status, label = dict(fixed), "optimal", "none (no free choice)"
    else:
        assignment, status, label = _solve_free(choices, free, fixed, target, budget_kind, t,
                                                switch_penalty, solver, time_limit, gap, msg,
                                                lo, hi, details)
    fraction, rel_time = achieved(choices, assignment, t)
    if not _meets(budget_kind, target, fraction, rel_time):   # cannot happen: _solve_free checks
        raise PlannerError(f"internal: the plan misses budget {budget} ({budget_kind}): "
                           f"fraction {float(fraction)}, time {float(rel_time)}")
    return Solution(assignment=assignment,
                    objective=objective_value(choices, assignment, switch_penalty),
                    status=status, solver=label, seconds=time.perf_counter() - start,
                    nvfp4_fraction=float(fraction), relative_time=float(rel_time),
                    budget_range=(float(lo), float(hi)), details=details)


def _prune(choice, budget_kind, t, switch_penalty):
    """Drop the precisions another one of the same choice dominates (exact).

    ``q`` dominates ``p`` when its objective term (switching penalty included) is no
    larger and it helps the budget at least as much: under ``"nvfp4_fraction"`` only
    NVFP4 counts, so of the other precisions only the cheapest can be optimal; under
    ``"time"`` ``q`` must also take no more time per FLOP. Any plan using ``p`` can swap
    to ``q`` and stay feasible and no worse, so removing ``p`` keeps an optimum. It turns
    the problem into a much smaller one (a 0/1 knapsack in the default case).
    """
    def effective(p):
        bonus = switch_penalty if switch_penalty and p == choice.previous else 0.0
        return choice.cost[p] - bonus

    def helps_budget(q, p):
        if budget_kind == "nvfp4_fraction":
            return q == "nvfp4" or p != "nvfp4"
        return t[q] <= t[p]

    keep = []
    for p in choice.cost:
        dominated = any(
            q != p and helps_budget(q, p) and effective(q) <= effective(p)
            # strict somewhere, or break exact ties by the fixed order of PRECISIONS
            and (effective(q) < effective(p) or not helps_budget(p, q)
                 or PRECISIONS.index(q) < PRECISIONS.index(p))
            for q in choice.cost)
        if not dominated:
            keep.append(p)
    return Choice(choice.unit, choice.group, choice.flops,
                  {p: choice.cost[p] for p in keep}, choice.previous)


def _solve_free(choices, free, fixed, target, budget_kind, t, switch_penalty, solver,
                time_limit, gap, msg, lo, hi, details):
    """Build and solve the model over the free choices; re-solve if the budget slips.

    ``target`` is the exact budget (a Fraction) from ``_check_budget``.
    """
    budget = float(target)          # for messages
    total = sum(c.flops for c in choices)
    solver_obj, label = pulp_compat.make_solver(solver, time_limit, gap, msg)
    # Right-hand side in shares of F (O(1) coefficients keep the solver's tolerances
    # meaningful); the fixed choices' part is moved to the right.
    if budget_kind == "nvfp4_fraction":
        fixed_part = sum(c.flops for c in choices if fixed.get(c.key) == "nvfp4") / total
        rhs = float(target) - fixed_part
    else:
        fixed_part = sum(c.flops * t[fixed[c.key]] for c in choices if c.key in fixed)
        rhs = float(target) - fixed_part / (total * t["bf16"])
    for attempt in range(MAX_TIGHTENINGS + 1):
        prob, x = _build(free, budget_kind, rhs, total, t, switch_penalty)
        outcome = pulp_compat.run(prob, solver_obj)
        if outcome.status == "infeasible":
            raise BudgetError(f"budget={budget} ({budget_kind}) is infeasible per {label}: "
                              f"{_describe_range(budget_kind, lo, hi)}")
        if outcome.status == "no_solution":
            # Typically a time_limit too short for the solver to find any plan; the budget
            # is reachable (checked above), so a greedy plan meets it.
            warnings.warn(f"{label} found no plan within time_limit={time_limit}s "
                          f"({outcome.detail}) for budget={budget} ({budget_kind}); using a "
                          f"greedy plan that meets the budget; raise time_limit for the "
                          f"optimal one", RuntimeWarning, stacklevel=3)
            details["fallback"] = "greedy"
            return greedy(choices, target, budget_kind, t, switch_penalty), "feasible", label
        if outcome.status not in ("optimal", "feasible"):
            raise PlannerError(f"{label} found no plan ({outcome.status}: {outcome.detail}, "
                               f"time_limit={time_limit}s) for budget={budget} ({budget_kind}); "
                               f"{_describe_range(budget_kind, lo, hi)}")
        assignment = dict(fixed)
        for c in free:
            picked = [p for p in c.cost if pulp_compat.value(x[c.key, p]) == 1]
            if len(picked) != 1:
                raise PlannerError(f"{label} returned a non one-hot choice for {c.key}: "
                                   f"{ {p: x[c.key, p].varValue for p in c.cost} }")
            assignment[c.key] = picked[0]
        fraction, rel_time = achieved(choices, assignment, t)
        if _meets(budget_kind, target, fraction, rel_time):
            if outcome.status == "feasible":
                warnings.warn(f"the precision ILP stopped before proving optimality "
                              f"({outcome.detail}, time_limit={time_limit}s); using the best "
                              f"plan found", RuntimeWarning, stacklevel=3)
            return assignment, outcome.status, label
        # Met only within the solver's feasibility tolerance (1e-7 for HiGHS and CBC):
        # tighten by the shortfall plus more than that tolerance, so that the solver
        # must move. This can only exclude plans within 2e-7 of the budget.
        details["tightenings"] = attempt + 1
        if budget_kind == "nvfp4_fraction":
            rhs += float(target - fraction) + TOLERANCE_STEP
        else:
            rhs -= float(rel_time - target) + TOLERANCE_STEP
    raise PlannerError(f"{label} kept returning plans that miss budget={budget} "
                       f"({budget_kind}) by its tolerance; last: fraction {float(fraction)}, "
                       f"time {float(rel_time)}")


def greedy(choices, target, budget_kind, t, switch_penalty=0.0):
    """A plan that meets the exact budget ``target`` (reachable), found greedily.

    Every choice starts at its cheapest precision (switching penalty included); then,
    while the budget is missed, the move with the least objective increase per unit of
    budget gained is taken: a move changes one choice to a precision that gains budget
    (NVFP4 under ``"nvfp4_fraction"``, a faster one under ``"time"``). Moves continue
    to the reachable end of the budget, so the result always meets it. The fallback
    when the solver finds no plan in time.
    """
    def effective(c, p):
        bonus = switch_penalty if switch_penalty and p == c.previous else 0.0
        return c.cost[p] - bonus

    def gain(c, now, to):
        if budget_kind == "nvfp4_fraction":
            return Fraction(c.flops) * ((to == "nvfp4") - (now == "nvfp4"))
        return Fraction(c.flops) * (Fraction(t[now]) - Fraction(t[to]))

    def best_move(c, now):
        moves = [((effective(c, to) - effective(c, now)) / float(gain(c, now, to)),
                  PRECISIONS.index(to), to) for to in c.cost if gain(c, now, to) > 0]
        return min(moves) if moves else None

    assignment = {c.key: min(c.cost, key=lambda p, c=c: (effective(c, p),
                                                           PRECISIONS.index(p)))
                  for c in choices}
    heap = []
    for i, c in enumerate(choices):
        move = best_move(c, assignment[c.key])
        if move is not None:
            heap.append((move[0], i, move[2]))
    heapq.heapify(heap)
    # The budget quantity, kept exact and updated per move: NVFP4 FLOPs or time spent.
    total = sum(c.flops for c in choices)
    if budget_kind == "nvfp4_fraction":
        need, have = target * total, sum(gain(c, "bf16", assignment[c.key]) for c in choices)
    else:
        need = total * Fraction(t["bf16"]) * (1 - target)      # time to save vs all-BF16
        have = sum(gain(c, "bf16", assignment[c.key]) for c in choices)
    while heap and have < need:
        _, i, to = heapq.heappop(heap)
        c = choices[i]
        have += gain(c, assignment[c.key], to)
        assignment[c.key] = to
        move = best_move(c, to)
        if move is not None:
            heapq.heappush(heap, (move[0], i, move[2]))
    return assignment


def _build(free, budget_kind, rhs, total, t, switch_penalty):
    prob = pulp_compat.new_problem("lowprec_precision_plan")
    x = {}
    objective, budget_terms = [], []
    for i, c in enumerate(free):
        one_hot = []
        for p, coefficient in c.cost.items():
            var = pulp_compat.binary(prob, f"x_{i}_{p}")
            x[c.key, p] = var
            one_hot.append(var)
            weight = coefficient
            if switch_penalty and c.previous in c.cost and p == c.previous:
                weight -= switch_penalty     # mu * (1 - x_prev), constant dropped
            if weight:
                objective.append(weight * var)
            share = c.flops / total
            if budget_kind == "nvfp4_fraction" and p == "nvfp4" and share:
                budget_terms.append(share * var)
            elif budget_kind == "time" and share:
                budget_terms.append((share * t[p] / t["bf16"]) * var)
        prob += pulp_compat.pulp.lpSum(one_hot) == 1, f"one_hot_{i}"
    prob += pulp_compat.pulp.lpSum(objective)
    if budget_kind == "nvfp4_fraction":
        prob += pulp_compat.pulp.lpSum(budget_terms) >= rhs, "budget"
    else:
        prob += pulp_compat.pulp.lpSum(budget_terms) <= rhs, "budget"
    return prob, x
