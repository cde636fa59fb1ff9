"""SNIP-style precision planner: statistics, cost model, ILP, re-planning.

``make_plan(model, budget=..., calibration=...)`` measures how much each linear layer's
GEMMs suffer in NVFP4 and FP8 (``stats``), prices them (``cost``) and picks precisions
per layer and GEMM group with an integer linear program (``ilp``); ``Replanner``
(``controller``) repeats this during training. ``lowprec.convert(model, budget=...)``
calls ``make_plan``.
"""

from lowprec.planner.builder import make_plan, plan_from_stats
from lowprec.planner.controller import Replanner
from lowprec.planner.cost import DeviceCost, device_cost, gemm_flops
from lowprec.planner.ilp import (BudgetError, Choice, NoSolverError, PlannerError, Solution,
                                 budget_range, solve)
from lowprec.planner.layer_stats import LayerStats
from lowprec.planner.loss import default_loss
from lowprec.planner.stats import collect_stats

__all__ = [
    "BudgetError", "Choice", "DeviceCost", "LayerStats", "NoSolverError", "PlannerError",
    "Replanner", "Solution", "budget_range", "collect_stats", "default_loss",
    "device_cost", "gemm_flops", "make_plan", "plan_from_stats", "solve",
]
