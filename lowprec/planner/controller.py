"""Re-planning during training: new statistics every N steps, a new plan, applied in place.

    replanner = Replanner(model, every=500, budget=0.75, calibration=lambda: next_batches(4),
                          optimizer=opt, loss_fn=loss_fn)
    for step in range(steps):
        ...
        opt.step()
        replanner.step()            # re-plans on every 500th call

Applying a plan only changes each ``lowprec.Linear``'s recipe (``lowprec.convert(model,
plan=...)`` on a converted model): parameters (the master weights), their ``.grad``
and the optimizer's state are the same objects with the same values afterwards, and the
statistics pass restores the caller's RNG state, so training continues exactly as if
the plan had been this one all along.

Distributed: call ``step`` on every rank at the same steps. Statistics are all-reduced,
rank 0 solves and broadcasts the plan as JSON; every rank applies the identical plan.
"""

from lowprec.planner import options
from lowprec.planner.builder import make_plan


def _apply_with_convert(model, plan):
    from lowprec.convert import convert
    return convert(model, plan=plan)


class Replanner:
    """Re-plan the precisions of ``model`` every ``every`` steps.

    Args:
        model: a model already converted by ``lowprec.convert`` (or plain; the first
            re-plan then converts it, which must happen before the optimizer is built if
            the model itself is a bare ``nn.Linear``).
        every: steps between re-plans (``step()`` calls).
        budget: as in ``make_plan``.
        calibration: a zero-argument callable returning fresh batches for each round
            (preferred: each round sees new data), or a re-iterable such as a list.
        optimizer, loss_fn: as in ``make_plan``.
        switch_penalty: objective units per GEMM group that changes vs the current plan
            (damps flip-flopping between near-equal choices).
        apply: ``apply(model, plan) -> model``; default ``lowprec.convert(model, plan=)``.
        on_plan: optional callback ``on_plan(step, plan)`` after each re-plan.
        plan_kwargs: anything else ``make_plan`` takes (``ties``, ``budget_kind``, ...).
    """

    def __init__(self, model, *, every, budget, calibration, optimizer=None, loss_fn=None,
                 switch_penalty=0.05, apply=None, on_plan=None, **plan_kwargs):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive int; got {every!r}")
        if calibration is None:
            raise ValueError("Replanner needs calibration batches (a callable or iterable)")
        budget = options.check_plan_options(budget=budget, **plan_kwargs)
        self.model = model
        self.every = every
        self.budget = budget
        self.calibration = calibration
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.switch_penalty = switch_penalty
        self.apply = apply or _apply_with_convert
        self.on_plan = on_plan
        self.recipe = plan_kwargs.pop("recipe", None)
        self.plan_kwargs = plan_kwargs
        self.steps = 0
        self.history = []          # (step, plan meta) of each re-plan

    @property
    def plan(self):
        return getattr(self.model, "lowprec_plan", None)

    def step(self):
        """Count one training step; re-plan on every ``every``-th. Returns the new plan or None."""
        self.steps += 1
        if self.steps % self.every:
            return None
        return self.replan()

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
        """The base recipe: the one given, else the first converted layer's (switches)."""
        if self.recipe is not None:
            return self.recipe
        for module in self.model.modules():
            recipe = getattr(module, "recipe", None)
            if recipe is not None:
                return recipe
        return None

    def state_dict(self):
        """Steps counted and the current plan as JSON (resume re-plans on schedule)."""
        plan = self.plan
        return {"steps": self.steps, "plan": None if plan is None else plan.to_json()}

    def load_state_dict(self, state):
        self.steps = int(state["steps"])
        if state.get("plan") is not None:
            from lowprec.plan import Plan
            plan = Plan.from_json(state["plan"])
            self.apply(self.model, plan)
            self.model.lowprec_plan = plan
