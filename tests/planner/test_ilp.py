"""The precision ILP: optimal against brute force, exact budgets, clear errors."""

import itertools
import random
from fractions import Fraction

import numpy as np
import pytest

from lowprec.planner import ilp, pulp_compat
from lowprec.planner.ilp import BudgetError, Choice, solve

PRECISIONS = ("nvfp4", "fp8", "bf16")
# Dyadic relative times (Blackwell 1 : 1/2 : 1/4), so brute force can check exactly.
TIME = {"nvfp4": 0.25, "fp8": 0.5, "bf16": 1.0}
TIME_X4 = {p: int(4 * t) for p, t in TIME.items()}


def random_instance(rng, n):
    choices = []
    for i in range(n):
        allowed = [p for p in PRECISIONS if rng.random() < 0.8] or ["bf16"]
        cost = {}
        for p in allowed:
            # Realistic ordering most of the time (nvfp4 worst), but not always.
            cost[p] = {"bf16": 0.0, "fp8": rng.random() * 0.5,
                       "nvfp4": rng.random() * 2}[p] if rng.random() < 0.9 else rng.random()
        previous = rng.choice(PRECISIONS) if rng.random() < 0.5 else None
        # Few distinct sizes, as in a transformer: exact budget ties happen.
        flops = rng.choice((2, 4, 6, 8)) * 1024
        choices.append(Choice(f"layer{i}", "all", flops, cost, previous))
    return choices


def brute_force(choices, budget, kind, switch_penalty):
    """Minimum objective over all assignments meeting the budget, or None."""
    options = [list(c.cost) for c in choices]
    combos = np.array(list(itertools.product(*[range(len(o)) for o in options])))
    cost = np.zeros(len(combos))
    nvfp4 = np.zeros(len(combos), dtype=np.int64)
    time_x4 = np.zeros(len(combos), dtype=np.int64)
    for i, (c, opts) in enumerate(zip(choices, options)):
        col = combos[:, i]
        values = np.array([c.cost[p] + (switch_penalty if c.previous in c.cost
                                         and p != c.previous else 0.0) for p in opts])
        cost += values[col]
        nvfp4 += np.array([c.flops if p == "nvfp4" else 0 for p in opts])[col]
        time_x4 += np.array([c.flops * TIME_X4[p] for p in opts])[col]
    total = sum(c.flops for c in choices)
    b = Fraction(repr(budget))             # the decimal budget, as solve reads it
    if kind == "nvfp4_fraction":
        ok = nvfp4 * b.denominator >= b.numerator * total
    else:
        ok = time_x4 * b.denominator <= 4 * b.numerator * total
    return cost[ok].min() if ok.any() else None


@pytest.mark.parametrize("kind", ["nvfp4_fraction", "time"])
def test_optimal_against_brute_force(kind):
    rng = random.Random(1234 if kind == "time" else 4321)
    checked = 0
    for trial in range(40):
        n = rng.randint(1, 10)
        choices = random_instance(rng, n)
        budget = rng.randint(0, 64) / 64        # dyadic: exact budget arithmetic
        if kind == "time":
            budget = max(budget, 1 / 64)
        penalty = rng.choice((0.0, 0.0, 0.3))
        best = brute_force(choices, budget, kind, penalty)
        if best is None:
            with pytest.raises(BudgetError):
                solve(choices, budget=budget, budget_kind=kind, time_cost=TIME,
                      switch_penalty=penalty)
            continue
        sol = solve(choices, budget=budget, budget_kind=kind, time_cost=TIME,
                    switch_penalty=penalty)
        assert sol.status == "optimal"
        # HiGHS proves optimality to mip_abs_gap (1e-6 by default) with gap=0.
        assert sol.objective == pytest.approx(best, abs=1e-6), (trial, n, budget)
        fraction, rel_time = ilp.achieved(choices, sol.assignment, TIME)
        if kind == "nvfp4_fraction":
            assert fraction >= Fraction(budget)
        else:
            assert rel_time <= Fraction(budget)
        checked += 1
    assert checked >= 20                       # most instances were feasible


def test_budget_holds_exactly_on_equal_layers():
    # 24 equal layers, budget 0.75: exactly 18 in NVFP4 (18/24 == 0.75 in exact arithmetic,
    # while summing 1/24 eighteen times in floats gives 0.7499999999999999).
    choices = [Choice(f"l{i}", "all", 3 * 2 ** 20, {"nvfp4": 1.0 + i / 100, "bf16": 0.0})
               for i in range(24)]
    sol = solve(choices, budget=0.75)
    chosen = [c.unit for c in choices if sol.assignment[c.key] == "nvfp4"]
    assert len(chosen) == 18
    assert chosen == [f"l{i}" for i in range(18)]      # the 18 least sensitive
    assert sol.nvfp4_fraction == 0.75


def test_budget_at_the_top_of_the_range():
    choices = [Choice("a", "all", 100, {"nvfp4": 1.0, "bf16": 0.0}),
               Choice("b", "all", 300, {"nvfp4": 5.0, "fp8": 1.0, "bf16": 0.0}),
               Choice("c", "all", 200, {"bf16": 0.0})]                  # forced
    assert ilp.budget_range(choices) == (0.0, 400 / 600)
    for budget in (0.6666666666666666, 0.6666666666666667):   # below / above 2/3 by 1e-17
        sol = solve(choices, budget=budget)                     # the latter snaps to 2/3
        assert sol.assignment[("a", "all")] == sol.assignment[("b", "all")] == "nvfp4"
    with pytest.raises(BudgetError):
        solve(choices, budget=0.6667)


def test_unreachable_budget_names_the_range():
    choices = [Choice("a", "all", 100, {"nvfp4": 1.0, "bf16": 0.0}),
               Choice("c", "all", 300, {"bf16": 0.0})]
    with pytest.raises(BudgetError, match=r"budget=0.5 cannot be met.*\[0, 0.25\]"):
        solve(choices, budget=0.5)
    with pytest.raises(BudgetError, match=r"\[0.8125, 1\]"):   # (100/4 + 300) / 400
        solve(choices, budget=0.3, budget_kind="time", time_cost=TIME)


@pytest.mark.parametrize("budget", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_out_of_range_budget(budget):
    choices = [Choice("a", "all", 100, {"nvfp4": 1.0, "bf16": 0.0})]
    with pytest.raises(BudgetError, match="budget"):
        solve(choices, budget=budget)


def test_time_budget_must_be_positive():
    choices = [Choice("a", "all", 100, {"nvfp4": 1.0, "bf16": 0.0})]
    with pytest.raises(BudgetError, match="relative time must be > 0"):
        solve(choices, budget=0.0, budget_kind="time")


def test_bad_choices_are_named():
    with pytest.raises(ValueError, match="unknown precisions"):
        solve([Choice("a", "all", 1, {"int8": 0.0})], budget=0)
    with pytest.raises(ValueError, match="duplicate choice"):
        solve([Choice("a", "g", 1, {"bf16": 0.0})] * 2, budget=0)
    with pytest.raises(ValueError, match="non-finite"):
        solve([Choice("a", "g", 1, {"nvfp4": float("nan"), "bf16": 0.0})], budget=0)
    with pytest.raises(ValueError, match="budget_kind"):
        solve([Choice("a", "g", 1, {"bf16": 0.0})], budget=0, budget_kind="watts")


def test_fp8_only_pays_under_a_time_budget():
    choices = [Choice(f"l{i}", "all", 1000, {"nvfp4": 4.0, "fp8": 1.0, "bf16": 0.0})
               for i in range(4)]
    frac = solve(choices, budget=0.5)
    assert sorted(frac.assignment.values()) == ["bf16", "bf16", "nvfp4", "nvfp4"]
    timed = solve(choices, budget=0.5, budget_kind="time", time_cost=TIME)
    assert set(timed.assignment.values()) == {"fp8"}          # 4 x 1.0 beats 2 x 4.0
    assert timed.relative_time == 0.5


def test_switch_penalty_keeps_the_previous_plan():
    choices = [Choice("a", "all", 100, {"nvfp4": 1.0, "bf16": 0.0}, previous="nvfp4"),
               Choice("b", "all", 100, {"nvfp4": 0.9, "bf16": 0.0}, previous="bf16")]
    assert solve(choices, budget=0.5).assignment[("b", "all")] == "nvfp4"
    sticky = solve(choices, budget=0.5, switch_penalty=0.5)
    assert sticky.assignment == {("a", "all"): "nvfp4", ("b", "all"): "bf16"}


def test_cbc_fallback_agrees_with_highs():
    rng = random.Random(7)
    choices = random_instance(rng, 8)
    try:
        cbc = solve(choices, budget=0.25, solver="cbc", time_cost=TIME)
    except pulp_compat.NoSolverError:
        pytest.skip("no CBC here (PuLP >= 4 without pulp[cbc])")
    highs = solve(choices, budget=0.25, solver="highs", time_cost=TIME)
    assert cbc.objective == pytest.approx(highs.objective, abs=1e-6)


def test_no_solver_is_a_clear_error(monkeypatch):
    def nothing(name, time_limit, gap, msg):
        def broken():
            raise FileNotFoundError("no such binary")
        return [(f"{name}-stub", broken)]
    monkeypatch.setattr(pulp_compat, "_candidates", nothing)
    choices = [Choice("a", "all", 1, {"nvfp4": 1.0, "bf16": 0.0})]
    with pytest.raises(pulp_compat.NoSolverError, match="no MILP solver.*highs-stub.*highspy"):
        solve(choices, budget=0.5)


def _with_outcome(monkeypatch, status):
    real = pulp_compat.run

    def fake(prob, solver):
        outcome = real(prob, solver)
        return pulp_compat.Outcome(status, f"forced {status}", outcome.seconds)
    monkeypatch.setattr(pulp_compat, "run", fake)


def test_time_limit_with_a_plan_warns(monkeypatch):
    _with_outcome(monkeypatch, "feasible")
    choices = [Choice(f"l{i}", "all", 10, {"nvfp4": 1.0 + i, "bf16": 0.0}) for i in range(3)]
    with pytest.warns(RuntimeWarning, match="before proving optimality"):
        sol = solve(choices, budget=0.3)
    assert sol.status == "feasible"


def test_solver_infeasible_and_no_solution(monkeypatch):
    choices = [Choice(f"l{i}", "all", 10, {"nvfp4": 1.0, "bf16": 0.0}) for i in range(3)]
    _with_outcome(monkeypatch, "infeasible")
    with pytest.raises(BudgetError, match=r"infeasible.*reachable"):
        solve(choices, budget=0.3)


@pytest.mark.parametrize("kind, budget", [("nvfp4_fraction", 0.6), ("time", 0.5)])
def test_too_small_time_limit_falls_back_to_a_greedy_plan(kind, budget):
    """A time_limit too short for any solution: a warning naming time_limit and a plan
    that meets the budget (the greedy fallback), not a PlannerError.

    Real solver, no stub: HiGHS with time_limit=0 stops before its first incumbent.
    Mutants: greedy() returning its starting assignment (no moves) -> solve's final
    budget check raises; the fallback branch removed -> PlannerError "found no plan".
    """
    rng = random.Random(5)
    choices = [Choice(f"l{i}", "all", rng.randint(1, 50) * 64,
                      {"nvfp4": rng.random(), "fp8": rng.random() / 3, "bf16": 0.0})
               for i in range(200)]
    with pytest.warns(RuntimeWarning, match=r"time_limit=0\.0s.*greedy plan"):
        sol = solve(choices, budget=budget, budget_kind=kind, time_cost=TIME, time_limit=0.0)
    assert sol.status == "feasible" and sol.details["fallback"] == "greedy"
    fraction, rel_time = ilp.achieved(choices, sol.assignment, TIME)
    assert fraction >= Fraction(budget) if kind == "nvfp4_fraction" \
        else rel_time <= Fraction(budget)
    best = solve(choices, budget=budget, budget_kind=kind, time_cost=TIME)
    assert best.objective <= sol.objective


def test_greedy_meets_every_reachable_budget():
    """The fallback alone on random instances (forced choices, previous plans included):
    every reachable dyadic budget is met, under both budget kinds."""
    rng = random.Random(11)
    for trial in range(60):
        choices = random_instance(rng, rng.randint(1, 12))
        kind = rng.choice(ilp.BUDGET_KINDS)
        lo, hi = ilp._exact_range(choices, kind, TIME)
        budget = Fraction(rng.randint(0, 64), 64) * (hi - lo) + lo
        got = ilp.greedy(choices, budget, kind, TIME, rng.choice((0.0, 0.3)))
        fraction, rel_time = ilp.achieved(choices, got, TIME)
        assert all(got[c.key] in c.cost for c in choices)
        assert fraction >= budget if kind == "nvfp4_fraction" else rel_time <= budget, trial


def test_time_budget_is_relative_to_the_bf16_time():
    """Device times with BF16 != 1 (here 3x TIME: same ratios) give the optimum of the
    brute force on the ratios: the budget rows are divided by the BF16 time.

    Mutant killed: ``_build`` using ``share * t[p]`` (not divided by ``t["bf16"]``), or
    the fixed choices' time not divided by it: with t_bf16 = 3 every plan then looks 3x
    slower and the solver answers infeasible or a worse plan.
    """
    scaled = {p: 3 * t for p, t in TIME.items()}          # 0.75 : 1.5 : 3, exact floats
    rng = random.Random(99)
    checked = 0
    for trial in range(40):
        choices = random_instance(rng, rng.randint(2, 8))
        budget = max(rng.randint(0, 64) / 64, 1 / 64)
        best = brute_force(choices, budget, "time", 0.0)
        if best is None:
            continue
        sol = solve(choices, budget=budget, budget_kind="time", time_cost=scaled)
        assert sol.objective == pytest.approx(best, abs=1e-6), trial
        assert ilp.achieved(choices, sol.assignment, scaled)[1] <= Fraction(budget)
        checked += 1
    assert checked >= 20                       # most instances were feasible


def test_no_free_choice_needs_no_solver(monkeypatch):
    monkeypatch.setattr(pulp_compat, "make_solver", None)   # would raise if called
    sol = solve([Choice("a", "all", 5, {"bf16": 0.0})], budget=0.0)
    assert sol.assignment == {("a", "all"): "bf16"}


def test_pruning_keeps_only_undominated_options():
    c = Choice("a", "g", 1, {"nvfp4": 1.0, "fp8": 0.5, "bf16": 0.0})
    assert set(ilp._prune(c, "nvfp4_fraction", TIME, 0.0).cost) == {"nvfp4", "bf16"}
    assert set(ilp._prune(c, "time", TIME, 0.0).cost) == {"nvfp4", "fp8", "bf16"}
    sticky = Choice("a", "g", 1, {"nvfp4": 1.0, "fp8": 0.5, "bf16": 0.3}, previous="fp8")
    assert set(ilp._prune(sticky, "nvfp4_fraction", TIME, 1.0).cost) == {"nvfp4", "fp8"}
