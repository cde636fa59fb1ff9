"""``make_plan``: statistics, then the ILP, then a ``lowprec.Plan`` that explains itself.

Decision units. Layers in one tie group (a fused QKV or gate/up projection given as
``ties=[["q", "k", "v"], ...]``) form one unit; every other layer is a unit of its own.
A candidate is a linear layer, a Conv1D, or one projection of a group of experts
(``...experts.gate_up_proj``: all E experts, one choice for the group). A tied
embedding/LM head pair is one unit by construction: the embedding is a lookup, not a
candidate, so the LM head that shares its weight is the pair's only GEMM.
A unit's GEMMs are split into GEMM groups (default ``(("fprop", "dgrad"), ("wgrad",))``:
fprop and dgrad both read W's quantized copy, so they share its precision). One ILP
choice per (unit, GEMM group); ties therefore hold by construction.

Objective coefficients. Each GEMM has one divergence metric (``objective="snip"``:
fprop -> LD, dgrad -> DX, wgrad -> WD; ``objective="relative_error"``: the relative
error of that GEMM's output, the classic heuristic, for comparison). Each metric is
divided by its mean NVFP4 value over the measured layers, so every term is O(1) and the
three metrics weigh alike unless ``weights`` says otherwise; BF16 costs 0.

Distributed. Every rank gathers statistics on its own batches; the sums are all-reduced,
rank 0 solves and broadcasts the plan as JSON (or the error it hit), and every rank
decodes the same bytes, so all ranks hold the identical plan (or raise the same error).
A single process returns the solver's plan as it is.
"""

import json
import math

from lowprec.discovery import candidate_layers, candidate_weight, check_weight_dtype
from lowprec.names import GEMMS
from lowprec.plan import LayerPlan, Plan
from lowprec.planner import ilp, options, pulp_compat
from lowprec.planner.cost import device_cost, gemm_flops
from lowprec.planner.distributed import broadcast_text, rebuild_error, resolve_group
from lowprec.planner.stats import DEFAULT_NOISE_SCALE, DEFAULT_SEED, collect_stats
from lowprec.recipe import Recipe

DEFAULT_GEMM_GROUPS = (("fprop", "dgrad"), ("wgrad",))
OBJECTIVES = ("snip", "relative_error")
SNIP_METRIC = {"fprop": "ld", "dgrad": "dx", "wgrad": "wd"}
METRIC_LABEL = {"ld": "LD", "dx": "dX err", "wd": "WD"}
ERRORS = {"BudgetError": ilp.BudgetError, "NoSolverError": pulp_compat.NoSolverError,
          "PlannerError": ilp.PlannerError}


def check_gemm_groups(gemm_groups):
    """``gemm_groups`` as a tuple of tuples; ValueError unless it splits ``GEMMS``."""
    groups = tuple(tuple(g) for g in gemm_groups)
    flat = [gemm for g in groups for gemm in g]
    if sorted(flat) != sorted(GEMMS) or any(not g for g in groups):
        raise ValueError(f"gemm_groups must split {GEMMS} into non-empty groups, each GEMM "
                         f"once; got {gemm_groups!r}")
    return groups


def decision_units(candidates, ties):
    """``[(unit_name, [member names])]`` in model order; tie groups become one unit.

    ValueError naming a tied layer that is not a candidate or is in two groups.
    """
    names = [name for name, _, _ in candidates]
    known = set(names)
    owner = {}
    for group in ties or ():
        group = list(group)
        unknown = [n for n in group if n not in known]
        if unknown:
            raise ValueError(f"ties name layers that are not candidates: {unknown}")
        for n in group:
            if n in owner:
                raise ValueError(f"layer {n!r} is in two tie groups: {owner[n]} and {group}")
            owner[n] = group
    units, seen = [], set()
    for name in names:
        if name in seen:
            continue
        members = owner.get(name, [name])
        members = [n for n in names if n in members]          # model order
        seen.update(members)
        units.append(("+".join(members), members))
    return units


def _metric(stats, gemm, objective):
    """``{precision: value}`` of the divergence for ``gemm`` of one layer, or None."""
    if callable(objective):
        return objective(stats, gemm)
    if objective == "snip":
        values = getattr(stats, SNIP_METRIC[gemm])
    else:
        values = stats.rel.get(gemm, {})
    return dict(values) if values else None


def _normalisers(layer_stats, objective, forced):
    """Mean NVFP4 value of each GEMM's metric over the measured layers (1 if none)."""
    out = {}
    for gemm in GEMMS:
        values = [m["nvfp4"] for name, s in layer_stats.items() if not forced[name]
                  for m in [_metric(s, gemm, objective)] if m and "nvfp4" in m]
        mean = sum(values) / len(values) if values else 0.0
        out[gemm] = mean if mean > 0 else 1.0
    return out


def _previous_precision(previous, members, group):
    """The precision every GEMM of ``group`` of every member had in ``previous``, or None.

    None (no switching penalty either way) when the previous plan lacks a member or gave
    the group's GEMMs different precisions (a plan made with other GEMM groups or ties):
    then no choice keeps the previous plan as it was.
    """
    if previous is None:
        return None
    layers = getattr(previous, "layers", {})
    if any(m not in layers for m in members):
        return None
    precisions = {getattr(layers[m].recipe, gemm) for m in members for gemm in group}
    return precisions.pop() if len(precisions) == 1 else None


def _build_choices(units, groups, layer_stats, forced, objective, weights, norm, previous):
    """One ILP choice per (unit, GEMM group): FLOPs, normalised costs, previous precision.

    A precision whose metric is missing or not finite for any member is not allowed
    (e.g. NVFP4 on a shape it cannot take); a unit with a forced member is BF16 only.
    """
    choices = []
    for unit, members in units:
        unit_forced = [m for m in members if forced[m]]
        for group in groups:
            gname = "+".join(group)
            flops = sum(gemm_flops(round(layer_stats[m].tokens), *layer_stats[m].shape)
                        for m in members for _ in group)
            cost = None
            if not unit_forced:
                cost = {"nvfp4": 0.0, "fp8": 0.0, "bf16": 0.0}
                for m in members:
                    for gemm in group:
                        metric = _metric(layer_stats[m], gemm, objective) or {}
                        for p in list(cost):
                            v = 0.0 if p == "bf16" else metric.get(p)   # the reference
                            if v is None or not math.isfinite(v):
                                cost.pop(p)        # not measurable -> not allowed
                            else:
                                cost[p] += weights[gemm] * v / norm[gemm]
            choices.append(ilp.Choice(unit, gname, flops, cost or {"bf16": 0.0},
                                      _previous_precision(previous, members, group)))
    return choices


def _forced_reasons(candidates, layer_stats):
    forced = {}
    for name, _, reason in candidates:
        if reason is not None:
            forced[name] = reason if reason.startswith("forced") else f"forced bf16: {reason}"
        elif layer_stats[name].batches == 0 or layer_stats[name].tokens == 0:
            forced[name] = "forced bf16: did not run on the calibration batches"
        elif not layer_stats[name].ld:
            forced[name] = "forced bf16: no statistics"
        else:
            forced[name] = None
    return forced


def _fmt(value, metric):
    return f"{value:.2e}" if metric == "ld" else f"{value:.3g}"


def _reason(unit, members, groups, solution, layer_stats, objective, ranks):
    parts = []
    for group in groups:
        gname = "+".join(group)
        p = solution.assignment[(unit, gname)]
        facts = []
        for gemm in group:
            metric_name = (SNIP_METRIC[gemm] if objective == "snip" else
                           f"rel {gemm}" if objective == "relative_error" else f"{gemm} cost")
            vals = _metric(layer_stats[members[0]], gemm, objective) or {}
            shown = "/".join(_fmt(vals[q], SNIP_METRIC[gemm]) for q in ("nvfp4", "fp8")
                             if q in vals)
            label = METRIC_LABEL.get(metric_name, metric_name)
            facts.append(f"{label} fp4/fp8 {shown}")
        rank, count = ranks.get((unit, gname), (None, None))
        if rank is not None:
            facts.append(f"sensitivity {rank}/{count}")
        parts.append(f"{gname} {p} ({', '.join(facts)})")
    text = "ILP: " + "; ".join(parts)
    if len(members) > 1:
        text += f" [tied: {', '.join(members)}]"
    return text


def _sensitivity_ranks(choices):
    """Rank (1 = most sensitive) of each free choice's NVFP4 cost within its GEMM group."""
    ranks = {}
    by_group = {}
    for c in choices:
        if "nvfp4" in c.cost and len(c.cost) > 1:
            by_group.setdefault(c.group, []).append(c)
    for group, items in by_group.items():
        ordered = sorted(items, key=lambda c: -c.cost["nvfp4"])
        for i, c in enumerate(ordered):
            ranks[c.key] = (i + 1, len(ordered))
    return ranks


def _plan_from(solution, candidates, units, groups, layer_stats, forced, choices,
               objective, dev, recipe, meta):
    by_key = {c.key: c for c in choices}
    unit_of = {m: (unit, members) for unit, members in units for m in members}
    total = sum(c.flops for c in choices)
    ranks = _sensitivity_ranks(choices)
    layers = []
    for name, _, _ in candidates:
        unit, members = unit_of[name]
        stats = layer_stats[name]
        precision = {}
        for group in groups:
            for gemm in group:
                precision[gemm] = solution.assignment[(unit, "+".join(group))]
        if forced[name]:
            reason = forced[name]
        elif any(forced[m] for m in members):
            culprit = next(m for m in members if forced[m])
            reason = f"forced bf16: tied to {culprit} ({forced[culprit]})"
        else:
            reason = _reason(unit, members, groups, solution, layer_stats, objective, ranks)
        per_gemm = gemm_flops(round(stats.tokens), *stats.shape)
        layer_flops = {}
        for gemm in GEMMS:
            layer_flops[precision[gemm]] = layer_flops.get(precision[gemm], 0) + per_gemm
        summary = stats.to_dict()
        summary["objective"] = {"+".join(g): dict(by_key[(unit, "+".join(g))].cost)
                                for g in groups}
        layers.append(LayerPlan(name=name, shape=tuple(stats.shape),
                                recipe=recipe.replace(**precision), reason=reason,
                                flops_share=3 * per_gemm / total if total else 0.0,
                                cost=dev.relative_time(layer_flops), stats=summary))
    return Plan(layers, meta)


def check_objective(objective):
    """The objective's name (a callable's ``__name__``); ValueError for an unknown one."""
    if callable(objective):
        return getattr(objective, "__name__", "custom")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES} or a callable; "
                         f"got {objective!r}")
    return objective


def check_make_plan_options(model, *, budget, candidates=None, budget_kind="nvfp4_fraction",
                            ties=None, recipe=None, time_limit=10.0, gap=0.0,
                            gemm_groups=DEFAULT_GEMM_GROUPS, objective="snip",
                            **_judged_later):
    """Check every option of ``make_plan`` that can be judged without statistics.

    ``make_plan`` calls it first, and ``Replanner`` at construction (its first re-plan
    can come 1,000+ steps into training). Other keyword arguments are accepted and left
    to their owners, so callers can pass their whole option dict.

    Returns:
        ``(budget as a float, candidates)``: the candidate list (default
        ``discovery.candidate_layers(model)``), which the ties are checked against.

    Raises:
        BudgetError / OptionError / TypeError / ValueError naming the value.
    """
    budget = options.check_plan_options(budget=budget, budget_kind=budget_kind, ties=ties,
                                        recipe=recipe, time_limit=time_limit, gap=gap)
    check_objective(objective)
    check_gemm_groups(gemm_groups)
    candidates = list(candidates) if candidates is not None else candidate_layers(model)
    if not candidates:
        raise ValueError("the model has no candidate linear layers to plan")
    decision_units(candidates, ties)
    return budget, candidates


def _check_calibration(calibration):
    if calibration is None:
        raise ValueError("the planner measures the model on calibration batches: pass "
                         "calibration=<an iterable of batches>")
    options.check_calibration(calibration, "the planner")


def _check_weight_dtypes(candidates):
    """A free candidate may get a quantized recipe: refuse a weight dtype the quantized
    GEMMs cannot take now, not after minutes of statistics."""
    for name, module, forced in candidates:
        if forced is None:
            check_weight_dtype(name, candidate_weight(name, module), planned=True)


def make_plan(model, *, budget, calibration, optimizer=None, loss_fn=None, recipe=None,
              candidates=None, previous=None, budget_kind="nvfp4_fraction", ties=None,
              gemm_groups=DEFAULT_GEMM_GROUPS, objective="snip", weights=None,
              switch_penalty=0.0, device=None, results_dir=None, solver="auto",
              time_limit=10.0, gap=0.0, num_batches=None, noise_scale=DEFAULT_NOISE_SCALE,
              seed=DEFAULT_SEED, progress=None, process_group="auto"):
    """Measure every candidate layer, solve the precision ILP, return a ``lowprec.Plan``.

    Args:
        model: the model (``nn.Linear`` or ``lowprec.Linear`` layers; statistics are
            always of the high-precision layers).
        budget: under ``budget_kind="nvfp4_fraction"`` (default, SNIP's), the least
            fraction of all linear-layer FLOPs (the three GEMMs of every candidate,
            forced ones included) that must run in NVFP4; under ``"time"``, the most
            time relative to all-BF16 (device relative costs, ``cost.device_cost``).
        calibration: an iterable of batches (or a callable returning one).
        optimizer: Adam/AdamW holding the weights: WD through its moments.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``, differentiable, computed by
            running ``model``; default ``stats.default_loss`` (the model's own output:
            ``model(**batch)`` for a dict, ``model(*batch)`` for a tuple or list,
            ``model(batch)`` otherwise, which must return the loss). A model returning
            logits with ``(x, y)`` batches needs e.g.
            ``loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1])``.
        recipe: the base ``lowprec.Recipe`` (its switches shape the quantizers).
        candidates: ``[(name, module, forced_reason)]``; default
            ``lowprec.discovery.candidate_layers(model)``.
        previous: the previous Plan, for ``switch_penalty``.
        ties: lists of layer names that must share precisions (fused QKV, gate/up).
        gemm_groups: how the three GEMMs share a precision (see module docstring).
        objective: ``"snip"``, ``"relative_error"``, or a callable
            ``objective(layer_stats, gemm) -> {"nvfp4": v, "fp8": v}`` (e.g. for
            baselines); values are normalised like the built-in metrics.
        weights: ``{"fprop": w, "dgrad": w, "wgrad": w}`` on the normalised metrics.
        switch_penalty: objective units per GEMM group that changes vs ``previous``.
        device, results_dir: relative precision costs (``cost.device_cost``).
        solver, time_limit, gap: passed to ``ilp.solve``.
        num_batches, noise_scale, seed, progress, process_group: see
            ``stats.collect_stats``.

    Returns:
        Plan: every candidate layer with shape, FLOPs share, LD/WD/DX statistics, chosen
        precisions, relative time cost and the reason; ``meta`` holds the budget, what
        was achieved, the solver's status and timings, the device costs and their source.

    Raises (the options, the calibration and the candidates' weight dtypes are checked
    before any statistics):
        ilp.BudgetError (a ValueError) naming the reachable range; NoSolverError;
        PlannerError; TypeError/ValueError naming ``loss_fn`` when it does not fit the
        batches; FloatingPointError for a non-finite loss or statistic (naming the batch
        and layer). In a distributed run every rank raises the same error.
    """
    budget, candidates = check_make_plan_options(
        model, budget=budget, candidates=candidates, budget_kind=budget_kind, ties=ties,
        recipe=recipe, time_limit=time_limit, gap=gap, gemm_groups=gemm_groups,
        objective=objective)
    _check_calibration(calibration)
    _check_weight_dtypes(candidates)
    recipe = Recipe() if recipe is None else recipe
    group, rank, _ = resolve_group(process_group)
    collected = collect_stats(model, candidates, calibration, loss_fn=loss_fn,
                              optimizer=optimizer, recipe=recipe, num_batches=num_batches,
                              noise_scale=noise_scale, seed=seed, progress=progress,
                              process_group=group)

    def solve():
        return plan_from_stats(
            candidates, collected, budget=budget, budget_kind=budget_kind, ties=ties,
            gemm_groups=gemm_groups, objective=objective, weights=weights,
            previous=previous, switch_penalty=switch_penalty, device=device,
            results_dir=results_dir, solver=solver, time_limit=time_limit, gap=gap,
            recipe=recipe, extra_meta={"noise_scale": noise_scale, "seed": seed})

    if group is None:
        return solve()
    return _solved_on_rank_0(solve, group, rank)


def _solved_on_rank_0(solve, group, rank):
    """Rank 0 solves; every rank gets the identical plan (or error) as JSON text."""
    text = None
    if rank == 0:
        try:
            text = json.dumps({"ok": True, "plan": solve().to_json()})
        except Exception as err:           # noqa: BLE001  (every rank raises it below)
            text = json.dumps({"ok": False, "type": type(err).__name__, "message": str(err)})
    envelope = json.loads(broadcast_text(text, group))
    if not envelope["ok"]:
        raise rebuild_error(envelope["type"], envelope["message"], ERRORS)
    return Plan.from_json(envelope["plan"])


def plan_from_stats(candidates, collected, *, budget, budget_kind="nvfp4_fraction",
                    ties=None, gemm_groups=DEFAULT_GEMM_GROUPS, objective="snip",
                    weights=None, previous=None, switch_penalty=0.0, device=None,
                    results_dir=None, solver="auto", time_limit=10.0, gap=0.0, recipe=None,
                    extra_meta=None):
    """The ILP and the Plan from already collected statistics (``stats.collect_stats``).

    ``make_plan`` without the measuring; the arguments mean the same. Useful to compare
    objectives on one set of statistics.
    """
    objective_name = check_objective(objective)
    weights = {**{g: 1.0 for g in GEMMS}, **(weights or {})}
    if set(weights) != set(GEMMS):
        raise ValueError(f"weights keys must be {GEMMS}; got {sorted(weights)}")
    groups = check_gemm_groups(gemm_groups)
    units = decision_units(candidates, ties)
    dev = device_cost(device, results_dir)
    layer_stats = collected.layers
    forced = _forced_reasons(candidates, layer_stats)
    norm = _normalisers(layer_stats, objective, forced)
    choices = _build_choices(units, groups, layer_stats, forced, objective, weights, norm,
                             previous)
    solution = ilp.solve(choices, budget=budget, budget_kind=budget_kind, time_cost=dev.time,
                         switch_penalty=switch_penalty, solver=solver,
                         time_limit=time_limit, gap=gap)
    switched = sum(1 for c in choices if c.previous is not None
                   and solution.assignment[c.key] != c.previous)
    meta = {
        "planner": "snip-ilp", "objective": objective_name,
        "budget": budget, "budget_kind": budget_kind,
        "budget_range": list(solution.budget_range),
        "nvfp4_fraction": solution.nvfp4_fraction, "relative_time": solution.relative_time,
        # The device kind the costs describe, which need not be this machine's (no GPU:
        # Blackwell's); cost_source says why.
        "costs_for": dev.device, "device_time_cost": dict(dev.time), "cost_source": dev.source,
        "solver": solution.solver, "status": solution.status,
        "ilp_objective": solution.objective, "ilp_seconds": solution.seconds,
        "ilp_variables": solution.details.get("variables"),
        "ilp_fallback": solution.details.get("fallback"),
        "stats_seconds": collected.seconds, "calibration_batches": collected.batches,
        "world_size": collected.world_size,
        "gemm_groups": ["+".join(g) for g in groups],
        "ties": [list(t) for t in ties or ()],
        "weights": dict(weights), "normalization": norm,
        "switch_penalty": switch_penalty, "switched": switched if previous else None,
        "pulp": pulp_compat.PULP_VERSION, **(extra_meta or {}),
    }
    recipe = Recipe() if recipe is None else recipe
    meta["recipe"] = recipe.to_dict()
    return _plan_from(solution, candidates, units, groups, layer_stats, forced, choices,
                      objective, dev, recipe, meta)
