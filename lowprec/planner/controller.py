"""Re-planning during training: new statistics when due, a new plan, applied in place.

    replanner = Replanner(model, budget=0.75, calibration=lambda: next_batches(4),
                          optimizer=opt, loss_fn=loss_fn)
    for step in range(steps):
        ...
        opt.step()
        replanner.step()            # re-plans when due: within 2% of training time

Applying a plan only changes each ``lowprec.Linear``'s recipe (``module_swap.apply_plan``,
as ``lowprec.convert(model, plan=...)`` does on a converted model): parameters (the
master weights), their ``.grad`` and the optimizer's state are the same objects with the
same values afterwards, and the statistics pass restores the caller's RNG state, so
training continues exactly as if the plan had been this one all along.

Distributed: call ``step`` on every rank at the same steps. Statistics are all-reduced,
rank 0 solves and broadcasts the plan as JSON; every rank applies the identical plan.
"""

import inspect
import math
import time

from lowprec.module_swap import apply_plan
from lowprec.plan import Plan
from lowprec.planner import options
from lowprec.planner.budget import OptionError, as_number
from lowprec.planner.builder import check_make_plan_options, make_plan
from lowprec.planner.distributed import broadcast_text, resolve_group

# every="auto": re-planning may take at most this share of training time.
DEFAULT_MAX_OVERHEAD = 0.02
# Steps timed before the first interval is set.
TIMING_STEPS = 20
# The first interval when the plan's cost is not known yet (no statistics in its meta).
UNKNOWN_COST_EVERY = 1000


class Replanner:
    """Re-plan the precisions of ``model`` during training, when the interval says.

    Args:
        model: a model already converted by ``lowprec.convert`` (or plain; the first
            re-plan then converts it, which must happen before the optimizer is built if
            the model itself is a bare ``nn.Linear``).
        every: steps between re-plans (``step()`` calls), or ``"auto"`` (the default):
            the interval that keeps re-planning within ``max_overhead`` of training
            time, ``ceil(plan_seconds / (max_overhead * step_seconds))``, where
            ``step_seconds`` is the measured time between ``step()`` calls (re-plans
            excluded; first set after 20 steps) and ``plan_seconds`` the measured time
            of the last re-plan (before the first one: the statistics and ILP time in
            the current plan's meta, or 1000 steps when the plan has none). Re-set after
            every re-plan; distributed, rank 0's interval is used on every rank.
        max_overhead: the share of training time ``every="auto"`` allows (0.02).
        budget: as in ``make_plan``.
        calibration: a zero-argument callable returning fresh batches for each round
            (preferred: each round sees new data), or a re-iterable such as a list.
        optimizer, loss_fn: as in ``make_plan``.
        switch_penalty: objective units per GEMM group that changes vs the current plan
            (damps flip-flopping between near-equal choices).
        apply: ``apply(model, plan) -> model``; default ``lowprec.module_swap.apply_plan``.
        on_plan: optional callback ``on_plan(step, plan)`` after each re-plan.
        plan_kwargs: anything else ``make_plan`` takes (``ties``, ``budget_kind``, ...).

    Raises (at construction, not at the first re-plan): TypeError / ValueError naming
    the value for a calibration that is neither a callable nor a re-iterable (a bare
    tensor, an iterator), an ``apply`` or ``on_plan`` that is not callable, a
    ``switch_penalty`` that is not a finite number >= 0, an unknown keyword argument,
    ties naming layers the model does not have, and a budget or option ``make_plan``
    would refuse.
    """

    def __init__(self, model, *, budget, calibration, every="auto",
                 max_overhead=DEFAULT_MAX_OVERHEAD, optimizer=None, loss_fn=None,
                 switch_penalty=0.05, apply=None, on_plan=None, clock=time.perf_counter,
                 **plan_kwargs):
        if every != "auto" and (not isinstance(every, int) or isinstance(every, bool)
                                or every < 1):
            raise ValueError(f"every must be a positive int or 'auto'; got {every!r}")
        if not (isinstance(max_overhead, (int, float)) and 0 < max_overhead < 1):
            raise ValueError(f"max_overhead must be a number in (0, 1); got {max_overhead!r}")
        # Everything the first re-plan would check, checked now: with every="auto" that
        # re-plan can come 1,000+ steps into training.
        _check_calibration(calibration)
        for name, value in (("apply", apply), ("on_plan", on_plan)):
            if value is not None and not callable(value):
                raise TypeError(f"Replanner: {name} must be a callable or None; got "
                                f"{value!r:.80}")
        switch_penalty = _check_switch_penalty(switch_penalty)
        _check_plan_kwargs(plan_kwargs)
        budget, _ = check_make_plan_options(model, budget=budget, **plan_kwargs)
        self.model = model
        self.every = every
        self.budget = budget
        self.calibration = calibration
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.switch_penalty = switch_penalty
        self.apply = apply or apply_plan
        self.on_plan = on_plan
        self.recipe = plan_kwargs.pop("recipe", None)
        self.plan_kwargs = plan_kwargs
        self.steps = 0
        self.history = []          # (step, plan meta) of each re-plan
        self.auto = every == "auto"
        self.max_overhead = float(max_overhead)
        self.clock = clock
        self.next_replan = None if self.auto else every    # step of the next re-plan
        self.train_seconds = 0.0   # between step() calls, re-plans excluded
        self.replan_seconds = 0.0
        self._last_call = None
        self._last_cost = None     # seconds of the last re-plan

    @property
    def overhead(self):
        """Re-planning time as a share of training plus re-planning time so far."""
        total = self.train_seconds + self.replan_seconds
        return self.replan_seconds / total if total > 0 else 0.0

    @property
    def plan(self):
        return getattr(self.model, "lowprec_plan", None)

    def step(self):
        """Count one training step; re-plan when the interval says. Returns the new plan
        or None."""
        now = self.clock()
        if self._last_call is not None:
            self.train_seconds += now - self._last_call
        self.steps += 1
        if self.auto and self.next_replan is None and self.steps >= TIMING_STEPS:
            self._schedule()
        plan = None
        if self.next_replan is not None and self.steps >= self.next_replan:
            start = self.clock()
            plan = self.replan()
            self._last_cost = self.clock() - start
            self.replan_seconds += self._last_cost
            self.next_replan = None if self.auto else self.steps + self.every
            if self.auto:
                self._schedule()
        self._last_call = self.clock()
        return plan

    def _schedule(self):
        """Set the next re-plan step (``every="auto"``; see the class docstring)."""
        cost = self._last_cost
        if cost is None:
            meta = getattr(self.plan, "meta", None) or {}
            if "stats_seconds" in meta:
                cost = meta["stats_seconds"] + meta.get("ilp_seconds", 0.0)
        step_seconds = self.train_seconds / max(1, self.steps - 1)
        if cost is None or step_seconds <= 0:
            interval = UNKNOWN_COST_EVERY
        else:
            interval = max(1, math.ceil(cost / (self.max_overhead * step_seconds)))
        group, _, _ = resolve_group(self.plan_kwargs.get("process_group", "auto"))
        interval = int(broadcast_text(str(interval), group))
        self.every = interval
        self.next_replan = self.steps + interval

    def replan(self):
        """Gather statistics, solve, apply now. Returns the applied Plan."""
        batches = self.calibration() if callable(self.calibration) else self.calibration
        plan = make_plan(self.model, budget=self.budget, calibration=batches,
                         optimizer=self.optimizer, loss_fn=self.loss_fn,
                         previous=self.plan, switch_penalty=self.switch_penalty,
                         recipe=self._recipe(), **self.plan_kwargs)
        model = self.apply(self.model, plan)
        if model is not self.model:
            raise RuntimeError("applying the plan replaced the root module; re-planning "
                               "needs a model whose root is not a bare nn.Linear")
        self.model.lowprec_plan = plan
        self.history.append((self.steps, plan.meta))
        if self.on_plan is not None:
            self.on_plan(self.steps, plan)
        return plan

    def _recipe(self):
        """The base recipe: the one given, else the first converted layer's (switches).

        The plan's layers carry its switches, and applying the plan gives them to every
        layer, so re-planning keeps the switches the model was converted with.
        """
        if self.recipe is not None:
            return self.recipe
        for module in self.model.modules():
            recipe = getattr(module, "recipe", None)
            recipes = getattr(module, "recipes", None)          # GroupedExperts
            if recipe is None and isinstance(recipes, dict) and recipes:
                recipe = next(iter(recipes.values()))
            if recipe is not None:
                return recipe
        return None

    def state_dict(self):
        """Steps counted, the next re-plan step and the current plan as JSON (resume
        re-plans on schedule)."""
        plan = self.plan
        return {"steps": self.steps, "next_replan": self.next_replan,
                "plan": None if plan is None else plan.to_json()}

    def load_state_dict(self, state):
        self.steps = int(state["steps"])
        if state.get("next_replan") is not None:
            self.next_replan = int(state["next_replan"])
        elif not self.auto:        # a state saved without it: the next multiple of every
            self.next_replan = (self.steps // self.every + 1) * self.every
        if state.get("plan") is not None:
            plan = Plan.from_json(state["plan"])
            self.apply(self.model, plan)
            self.model.lowprec_plan = plan


# What Replanner hands make_plan itself; the rest of make_plan's options pass through.
_SET_BY_REPLANNER = ("model", "budget", "calibration", "optimizer", "loss_fn", "previous",
                     "switch_penalty")
_PASSED_ON = sorted(set(inspect.signature(make_plan).parameters) - set(_SET_BY_REPLANNER))


def _check_calibration(calibration):
    """A zero-argument callable, or batches that can be iterated again every round."""
    if calibration is None:
        raise ValueError("Replanner needs calibration batches (a callable or iterable)")
    if callable(calibration):
        return
    options.check_calibration(calibration, "Replanner")
    try:
        iterator = iter(calibration)
    except TypeError:
        raise TypeError(f"Replanner: calibration must be a callable returning batches or a "
                        f"re-iterable of batches (a list); got {calibration!r:.80}") from None
    if iterator is calibration:
        raise ValueError(f"Replanner: calibration is an iterator "
                         f"({type(calibration).__name__}), which the first re-plan would "
                         f"use up; pass a list, or a callable returning fresh batches "
                         f"(e.g. lambda: next_batches(4))")


def _check_switch_penalty(switch_penalty):
    value = as_number(switch_penalty, "switch_penalty")
    if not (math.isfinite(value) and value >= 0):
        raise OptionError(f"switch_penalty must be a finite number >= 0 (objective units "
                          f"per GEMM group that changes); got {switch_penalty!r}")
    return value


def _check_plan_kwargs(plan_kwargs):
    """Refuse the options Replanner sets itself and those make_plan does not take."""
    own = sorted(set(plan_kwargs) & set(_SET_BY_REPLANNER))
    if own:
        raise TypeError(f"Replanner sets {own} itself (previous: the current plan); do not "
                        f"pass them")
    unknown = sorted(set(plan_kwargs) - set(_PASSED_ON))
    if unknown:
        raise TypeError(f"Replanner got unknown keyword argument(s) {unknown}; the options "
                        f"it passes on to make_plan are {_PASSED_ON}")
