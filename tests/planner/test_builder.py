"""From statistics to ILP costs and back: each layer's objective terms are its own
statistics, normalised as the builder's docstring says (values computed here by hand),
and the switching penalty compares each GEMM group with what those GEMMs had before.

Synthetic statistics (``plan_from_stats``): no model, exact numbers.
"""

import pytest

from lowprec.plan import LayerPlan, Plan
from lowprec.planner import LayerStats, plan_from_stats
from lowprec.planner.stats import CollectedStats
from lowprec.recipe import Recipe

STATS = {   # deliberately unlike each other per precision, so a swap shows
    "a": {"ld": {"nvfp4": 4.0, "fp8": 1.0}, "dx": {"nvfp4": 0.2, "fp8": 0.05},
          "wd": {"nvfp4": 0.6, "fp8": 0.1}},
    "b": {"ld": {"nvfp4": 2.0, "fp8": 0.5}, "dx": {"nvfp4": 0.4, "fp8": 0.15},
          "wd": {"nvfp4": 0.2, "fp8": 0.3}},
}
SHAPES = {"a": (64, 32), "b": (32, 64)}


def collected():
    layers = {name: LayerStats(name=name, shape=SHAPES[name], tokens=16.0, batches=1,
                               curvature=0.0, **values)
              for name, values in STATS.items()}
    return CollectedStats(layers=layers, seconds=0.0, batches=1)


CANDIDATES = [("a", None, None), ("b", None, None)]


def test_each_layers_ilp_cost_is_its_statistics_normalised():
    """Normalisers are the mean NVFP4 metric per GEMM over the layers: LD (4+2)/2 = 3,
    dX (0.2+0.4)/2 = 0.3, WD (0.6+0.2)/2 = 0.4; fprop weighs 2. So layer a's
    fprop+dgrad costs 2*4/3 + 0.2/0.3 = 10/3 in NVFP4 and 2*1/3 + 0.05/0.3 = 5/6 in FP8.

    Mutant killed: ``_build_choices`` reading the FP8 metric for NVFP4 and vice versa
    (``metric.get({"nvfp4": "fp8", "fp8": "nvfp4"}[p])``).
    """
    plan = plan_from_stats(CANDIDATES, collected(), budget=0.0,
                           weights={"fprop": 2.0, "dgrad": 1.0, "wgrad": 1.0})
    want = {
        "a": {"fprop+dgrad": {"nvfp4": 2 * 4 / 3 + 0.2 / 0.3, "fp8": 2 * 1 / 3 + 0.05 / 0.3,
                              "bf16": 0.0},
              "wgrad": {"nvfp4": 0.6 / 0.4, "fp8": 0.1 / 0.4, "bf16": 0.0}},
        "b": {"fprop+dgrad": {"nvfp4": 2 * 2 / 3 + 0.4 / 0.3, "fp8": 2 * 0.5 / 3 + 0.15 / 0.3,
                              "bf16": 0.0},
              "wgrad": {"nvfp4": 0.2 / 0.4, "fp8": 0.3 / 0.4, "bf16": 0.0}},
    }
    for name in ("a", "b"):
        got = plan[name].stats["objective"]
        assert got.keys() == want[name].keys()
        for group, costs in want[name].items():
            assert got[group] == pytest.approx(costs, rel=1e-12), (name, group)
    assert plan.meta["normalization"] == pytest.approx({"fprop": 3.0, "dgrad": 0.3,
                                                        "wgrad": 0.4}, rel=1e-12)


def previous_plan():
    """a had three different precisions (split groups); b NVFP4 throughout."""
    return Plan([LayerPlan("a", SHAPES["a"], Recipe(dgrad="fp8", wgrad="bf16"), "before"),
                 LayerPlan("b", SHAPES["b"], Recipe.uniform("nvfp4"), "before")])


def test_switch_penalty_with_split_groups_keeps_each_gemm():
    """One group per GEMM, a prohibitive penalty, a budget every plan meets: each GEMM of
    each layer keeps its previous precision (the optimum without the penalty is BF16).

    Mutant killed: ``_previous_precision`` reading one fixed GEMM (``"fprop"``) or the
    first member's first GEMM for every group: a's dgrad and wgrad would stick to NVFP4.
    """
    plan = plan_from_stats(CANDIDATES, collected(), budget=1.0, budget_kind="time",
                           gemm_groups=(("fprop",), ("dgrad",), ("wgrad",)),
                           previous=previous_plan(), switch_penalty=100.0)
    for layer in previous_plan():
        assert plan[layer.name].precisions() == layer.precisions(), layer.name
    assert plan.meta["switched"] == 0
    free = plan_from_stats(CANDIDATES, collected(), budget=1.0, budget_kind="time",
                           gemm_groups=(("fprop",), ("dgrad",), ("wgrad",)))
    assert {p for layer in free for p in layer.precisions()} == {"bf16"}


def test_switch_penalty_of_a_group_whose_gemms_had_different_precisions():
    """Grouped fprop+dgrad now, but a's were NVFP4 and FP8 before: no choice keeps a's
    plan, so no penalty applies and a takes its cheapest choice (BF16); b's group had
    NVFP4 on both and keeps it.

    Mutants killed: the group's previous precision read from its first GEMM (a sticks to
    NVFP4) or its last GEMM (a sticks to FP8).
    """
    plan = plan_from_stats(CANDIDATES, collected(), budget=1.0, budget_kind="time",
                           previous=previous_plan(), switch_penalty=100.0)
    assert plan["a"].precisions() == ("bf16", "bf16", "bf16")
    assert plan["b"].precisions() == ("nvfp4", "nvfp4", "nvfp4")


def test_too_small_time_limit_gives_a_plan_that_says_so():
    """The solver finds nothing in time_limit=0: the plan still meets the budget, the
    warning names time_limit, and the plan's meta records the greedy fallback."""
    with pytest.warns(RuntimeWarning, match=r"no plan within time_limit=0\.0s"):
        plan = plan_from_stats(CANDIDATES, collected(), budget=0.5, time_limit=0.0)
    assert plan.meta["ilp_fallback"] == "greedy" and plan.meta["status"] == "feasible"
    assert plan.meta["nvfp4_fraction"] >= 0.5
