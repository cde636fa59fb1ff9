"""Does the SNIP ILP plan beat simple heuristics at the same NVFP4 budget?

On the demo's small byte-level GPT (``lowprec.demo``: a corpus shipped with Python), at
each budget (the least fraction of linear-layer FLOPs in NVFP4), train from the same
initial weights on the same batches with the precisions chosen by

- ``snip``: the planner's ILP on LD / dX / WD (``lowprec.planner``), all weights 1,
  planned once at init;
- ``snip-fitted``: the same ILP with the term weights fitted to measured sensitivity
  (``analyze_sensitivity.py`` -> ``fitted-weights-<preset>.json``), when that file exists;
- ``snip+replan``: the fitted (else plain) plan, re-planned every ``--replan-every``
  steps (``Replanner``, same weights);
- ``min-rel-error``: the same ILP minimising the relative quantization error of each
  GEMM's output (the classic heuristic, same statistics, same budget constraint);
- ``positional``: NVFP4 from the first block on, in model order, until the budget is met
  (the last blocks stay high precision, like the default recipe);
- ``random-k``: the ILP with random costs (a random plan meeting the same budget);

and as references ``bf16`` (no quantization) and ``all-nvfp4`` (every candidate layer).
Every plan runs on the same ``--seeds`` seeds (initialisation, batches and rounding keys
per seed), so differences are paired: the report gives each plan's mean final validation
loss and its paired difference to the ILP plan with a 95% t interval, plus the planner's
overhead (statistics time per round in training steps).

With ``--budget-kind time --device blackwell|hopper`` the budget is the most linear-layer
time relative to all-BF16 under that device's costs (``lowprec/planner/device_costs.json``),
so FP8 competes with NVFP4 and BF16; the plans are then ``snip`` (FP8 allowed),
``snip-no-fp8`` (the same ILP with NVFP4 and BF16 only: what the NVFP4-share budget can
express), ``min-rel-error`` and the random plans, with ``all-fp8`` as a reference.

Presets ``planted-<layout>`` are the ``cpu`` preset on the model with planted massive
activations (``planted.py``).

    python -m lowprec.experiments.planner.compare_plans --preset cpu --seeds 5   # ~25 min
    python -m lowprec.experiments.planner.compare_plans --preset planted-mlp1 --seeds 5
    python -m lowprec.experiments.planner.compare_plans --preset planted-mlp1 --seeds 5 \
        --budget-kind time --device blackwell
    python -m lowprec.experiments.planner.compare_plans --preset smoke --seeds 2 # a minute

Writes ``results-<stem>.json``, ``.md`` and ``.png`` into ``--out`` (default:
experiments/planner/ under the current directory); the stem is the preset, plus
``-time-<device>`` for a time budget. ``--report`` rewrites the ``.md`` and ``.png`` from
the ``.json`` without training.
"""

import argparse
import dataclasses
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch

import lowprec
from lowprec.demo import corpus as corpus_mod
from lowprec.demo.model import GPTConfig
from lowprec.demo.train import (PRESETS as DEMO_PRESETS, TrainConfig, calibration_batches,
                                evaluate, lr_at, make_optimizer, planner_loss)
from lowprec.experiments.planner import RESULTS
from lowprec.experiments.planner.planted import LAYOUTS, build, planting_of
from lowprec.planner import Replanner, collect_stats, plan_from_stats
from lowprec.planner.budget import BudgetError
from lowprec.planner.builder import SNIP_METRIC
from lowprec.planner.controller import DEFAULT_MAX_OVERHEAD
from lowprec.planner.cost import device_cost, gemm_flops


# (model, training, budgets, random plans, re-plan every N steps (0: off))
PRESETS = {
    "smoke": (GPTConfig(d_model=32, n_layer=2, n_head=2, seq_len=16),
              TrainConfig(steps=6, batch_size=4, eval_every=3, eval_batches=1,
                          calibration_batches=1, warmup_fraction=0.2),
              (0.5,), 2, 3),
    "cpu": (GPTConfig(d_model=32, n_layer=4, n_head=2, seq_len=32),
            TrainConfig(steps=150, batch_size=16, eval_every=50, eval_batches=4,
                        calibration_batches=4),
            (0.5, 0.75, 0.9), 5, 50),
    "gpu": (DEMO_PRESETS["gpu"][0], DEMO_PRESETS["gpu"][1], (0.5, 0.75, 0.9), 5, 250),
}
# The cpu preset on the model with planted massive activations, one per layout.
PRESETS.update({f"planted-{layout}": PRESETS["cpu"] for layout in LAYOUTS})

# Time budgets (relative to all-BF16) per device kind: on Blackwell the times of the
# NVFP4 shares 0.5 / 0.75 / 0.9 with the rest in BF16 (1 - 0.75 f), so the two budget
# kinds are compared at equal time; on Hopper, where emulated NVFP4 takes BF16's time,
# FP8 on 20% / 50% / 80% of the FLOPs.
TIME_BUDGETS = {"blackwell": (0.625, 0.4375, 0.325), "hopper": (0.9, 0.75, 0.6)}


# ----------------------------------------------------------------------------------
# Plans
# ----------------------------------------------------------------------------------

def random_objective(seed):
    """A random NVFP4 cost per (layer, GEMM): the ILP then returns a random plan that
    meets the budget (with the least overshoot the layer sizes allow)."""
    def objective(stats, gemm):
        rng = random.Random(f"{seed}/{stats.name}/{gemm}")
        return {"nvfp4": rng.random(), "fp8": 1.0 + rng.random()}
    objective.__name__ = f"random-{seed}"
    return objective


def snip_without_fp8(stats, gemm):
    """The SNIP objective with NVFP4 and BF16 only (FP8 not allowed): under a time budget,
    the plans an NVFP4-share budget can express."""
    return {"nvfp4": getattr(stats, SNIP_METRIC[gemm])["nvfp4"]}


snip_without_fp8.__name__ = "snip-no-fp8"


def positional_plan(candidates, collected, budget):
    """NVFP4 in model order (fprop+dgrad, then wgrad of each layer) until the budget is
    met; everything later stays BF16. Forced layers stay BF16."""
    tokens = {name: round(s.tokens) for name, s in collected.layers.items()}
    flops = {name: gemm_flops(tokens[name], *module.weight.shape)
             for name, module, _ in candidates}
    total = 3 * sum(flops.values())
    chosen, done = {}, 0
    for name, _, forced in candidates:
        chosen[name] = ["bf16", "bf16", "bf16"]
        if forced is not None:
            continue
        for gemms in ((0, 1), (2,)):
            if done * 1.0 >= budget * total:
                break
            for g in gemms:
                chosen[name][g] = "nvfp4"
            done += len(gemms) * flops[name]
    if done < budget * total:
        raise ValueError(f"positional plan cannot reach budget {budget}")
    layers = []
    for name, module, forced in candidates:
        reason = forced or f"positional: {'/'.join(chosen[name])} in model order"
        layers.append(lowprec.LayerPlan(name, tuple(module.weight.shape),
                                        lowprec.Recipe(*chosen[name]), reason=reason,
                                        flops_share=3 * flops[name] / total))
    return lowprec.Plan(layers, {"planner": "positional", "budget": budget,
                                 "nvfp4_fraction": done / total})


def compact_plan(plan, full=False):
    """What a run records of its plan: the whole Plan JSON (``full``: the planner's own
    plans, with statistics and reasons), else only each layer's precisions."""
    if plan is None:
        return None
    if full:
        return plan.to_json()
    return {layer.name: "/".join(layer.precisions()) for layer in plan}


def uniform_plan(candidates, precision):
    """Every candidate layer in ``precision`` (forced layers BF16)."""
    layers = [lowprec.LayerPlan(name, tuple(m.weight.shape),
                                lowprec.Recipe.uniform("bf16" if forced else precision),
                                reason=forced or f"every layer {precision.upper()}")
              for name, m, forced in candidates]
    return lowprec.Plan(layers, {"planner": f"all-{precision}"})


# ----------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------

def train_step(model, optimizer, batch, step, cfg):
    """One step at the cosine schedule's learning rate; returns the loss (a float)."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    loss = model(*batch)
    value = loss.item()
    if math.isfinite(value):
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return value


def train(model, corpus, cfg, device, replanner_factory=None, label="",
          return_optimizer=False):
    """AdamW (as the demo), cosine LR; optionally re-plan during training. Returns the
    result record (and the optimizer, for statistics on the trained model)."""
    batches = corpus.train_batches(cfg.batch_size, model.cfg.seq_len, seed=cfg.seed)
    val_batches = corpus.val_batches(cfg.batch_size, model.cfg.seq_len, cfg.eval_batches)
    optimizer = make_optimizer(model, cfg)
    replanner = replanner_factory(model, optimizer) if replanner_factory else None
    torch.manual_seed(cfg.seed + 1)       # the same stochastic-rounding keys for every run
    losses, start, stats_seconds = [], time.perf_counter(), 0.0
    for step in range(cfg.steps):
        losses.append(train_step(model, optimizer, next(batches), step, cfg))
        if not math.isfinite(losses[-1]):
            break
        if replanner is not None:
            t0 = time.perf_counter()
            if replanner.step() is not None:
                stats_seconds += time.perf_counter() - t0
        if step % max(1, cfg.steps // 10) == 0:
            print(f"  {label} step {step} loss {losses[-1]:.4f}", file=sys.stderr)
    seconds = time.perf_counter() - start
    result = {"final_val_loss": evaluate(model, val_batches, device),
              "final_train_loss": statistics.mean(losses[-max(1, len(losses) // 10):]),
              "train_seconds": seconds, "replan_seconds": stats_seconds,
              "step_seconds": (seconds - stats_seconds) / max(1, len(losses)),
              "diverged": not math.isfinite(losses[-1]),
              "replans": len(replanner.history) if replanner else 0}
    return (result, optimizer) if return_optimizer else result


def run_plan(plan, model_cfg, train_cfg, corpus, device, label, replanner_factory=None,
             planting=None):
    model = build(model_cfg, train_cfg.seed, device, planting)
    if plan is not None:
        model = lowprec.convert(model, plan=plan)
    result = train(model, corpus, train_cfg, device, replanner_factory, label)
    final_plan = getattr(model, "lowprec_plan", None)
    result["nvfp4_fraction"] = final_plan.summary()["nvfp4"] if final_plan else 0.0
    result["shares"] = final_plan.summary() if final_plan else {"bf16": 1.0}
    result["plan"] = compact_plan(final_plan, full=label.startswith("snip"))
    print(f"{label}: val {result['final_val_loss']:.4f} (nvfp4 "
          f"{result['nvfp4_fraction']:.3f}, {result['train_seconds']:.0f} s)", file=sys.stderr)
    return result


# ----------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------

# Two-sided 95% Student t quantiles by degrees of freedom (paired differences over seeds).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131}


def plan_names(record):
    names = ["snip", "snip-fitted", "snip+replan", "snip-no-fp8", "min-rel-error",
             "positional"]
    names += [f"random-{k}" for k in range(record["random_plans"])]
    return [n for n in names if any(f"{n}@{b}/{s}" in record["results"]
                                    for b in record["budgets"] for s in record["seeds"])]


def losses(record, name, budget=None):
    key = name if budget is None else f"{name}@{budget}"
    return [record["results"][f"{key}/{s}"]["final_val_loss"] for s in record["seeds"]]


def paired(a, b):
    """Mean of a - b over seeds and its 95% t interval."""
    d = [x - y for x, y in zip(a, b)]
    mean = statistics.mean(d)
    if len(d) < 2:
        return mean, float("nan")
    return mean, T975.get(len(d) - 1, 1.96) * statistics.stdev(d) / math.sqrt(len(d))


def random_mean(record, budget):
    """Per seed, the mean loss of the random plans (the 'mean of random plans')."""
    per_plan = [losses(record, f"random-{k}", budget) for k in range(record["random_plans"])]
    return [statistics.mean(v) for v in zip(*per_plan)]


def markdown(record):
    budgets, ilp = record["budgets"], record["ilp"]
    n = len(record["seeds"])
    kind = record.get("budget_kind", "nvfp4_fraction")
    budget_text = ("the least NVFP4 share of linear FLOPs" if kind == "nvfp4_fraction" else
                   f"the most linear-layer time relative to all-BF16 under "
                   f"{record['device']} costs {record['device_time_cost']}")
    lines = [f"Final validation loss, mean over {n} paired seeds {record['seeds']} (lower is "
             f"better); Δ = plan − `{ilp}`, paired over seeds, with its 95% t interval "
             f"(Δ > 0: `{ilp}` better). Preset `{record['preset']}`, "
             f"{record['train_config']['steps']} steps. Budget: {budget_text}.", ""]
    if record.get("planting"):
        lines += [f"Planted massive activations: {record['planting']}.", ""]
    lines += [
             "| plan | " + " | ".join(f"budget {b}: loss | Δ vs {ilp}" for b in budgets)
             + " |", "|---|" + "---|---|" * len(budgets)]
    rows = [(name, lambda b, name=name: losses(record, name, b)) for name in plan_names(record)]
    rows.append(("random, mean of plans", lambda b: random_mean(record, b)))
    for name, get in rows:
        cells = []
        for b in budgets:
            values = get(b)
            d, half = paired(values, losses(record, ilp, b))
            cells.append(f"{statistics.mean(values):.4f} | "
                         + ("—" if name == ilp else f"{d:+.4f} ± {half:.4f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for ref in record.get("references", ("bf16", "all-nvfp4")):
        values = losses(record, ref)
        cells = []
        for b in budgets:
            d, half = paired(values, losses(record, ilp, b))
            cells.append(f"{statistics.mean(values):.4f} | {d:+.4f} ± {half:.4f}")
        lines.append(f"| {ref} (reference) | " + " | ".join(cells) + " |")
    overhead = record["overhead"]
    text = lines + [""] + spread_lines(record) + planted_lines(record) + time_lines(record)
    if record.get("infeasible"):
        text += ["Plans that cannot meet their budget (not run): " + "; ".join(
            f"`{k}`: {v}" for k, v in sorted(record["infeasible"].items())), ""]
    replanning = (f"re-planning every {record['replan_every']} steps cost "
                  f"{100 * overhead['replan_share']:.0f}% of training time here; "
                  if record["replan_every"] else "")
    text.append(f"Planner statistics: {overhead['stats_seconds']:.1f} s per round on "
                f"{overhead['calibration_batches']} calibration batches = "
                f"{overhead['stats_in_steps']:.0f} training steps of the snip plan "
                f"({1e3 * overhead['step_seconds']:.1f} ms/step, one core); {replanning}"
                f"`Replanner(every=\"auto\")` would re-plan every "
                f"{overhead['auto_interval_steps']} steps to stay within "
                f"{100 * DEFAULT_MAX_OVERHEAD:.0f}%.")
    return "\n".join(text) + "\n"


def spread_lines(record):
    """The whole-model effects (every layer in one format, paired against BF16) beside
    the run-to-run spread (the sd of BF16's loss over seeds): a plan can only be told
    apart from another where the former dominates."""
    bf16 = losses(record, "bf16")
    sd = statistics.stdev(bf16) if len(bf16) > 1 else float("nan")
    out = [f"Run-to-run spread: BF16's final loss has sd {sd:.4f} over the {len(bf16)} "
           f"seeds."]
    for ref in record.get("references", ()):
        if ref != "bf16":
            d, half = paired(losses(record, ref), bf16)
            out.append(f"Whole model: {ref} − bf16 = {d:+.4f} ± {half:.4f} (paired, 95%).")
    return out + [""]


def layer_precisions(result):
    """``{layer: "fprop/dgrad/wgrad"}`` of a run's recorded plan (full or compact)."""
    plan = result.get("plan")
    if plan is None:
        return {}
    if isinstance(plan, str):
        return {layer.name: "/".join(layer.precisions())
                for layer in lowprec.Plan.from_json(plan)}
    return plan


def planted_lines(record):
    """On a planted model: per plan and budget, in how many seeds the plan kept every
    planted unit's fprop+dgrad out of NVFP4 (what the planting makes matter)."""
    planting = record.get("planting")
    if not planting:
        return []
    n = len(record["seeds"])
    out = [f"Seeds (of {n}) whose plan keeps every planted unit's fprop and dgrad out of "
           f"NVFP4:", "", "| plan | " + " | ".join(f"budget {b}" for b in record["budgets"])
           + " |", "|---|" + "---|" * len(record["budgets"])]
    for name in plan_names(record):
        cells = []
        for b in record["budgets"]:
            kept = 0
            for s in record["seeds"]:
                plan = layer_precisions(record["results"][f"{name}@{b}/{s}"])
                kept += all(plan.get(layer, "bf16/bf16/bf16").split("/")[0] != "nvfp4"
                            and plan.get(layer, "bf16/bf16/bf16").split("/")[1] != "nvfp4"
                            for layer in planting["layers"])
            cells.append(str(kept))
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out + [""]


def time_lines(record):
    """Under a time budget: each plan's mean relative time on the budget's device and
    its mean FP8 / NVFP4 shares of the FLOPs."""
    if record.get("budget_kind") != "time":
        return []
    cost = record["device_time_cost"]
    out = [f"Relative time on {record['device']} (mean over seeds) and FLOP shares "
           f"NVFP4 / FP8:", ""]
    for b in record["budgets"]:
        cells = []
        for name in plan_names(record):
            runs = [record["results"][f"{name}@{b}/{s}"] for s in record["seeds"]]
            shares = [r["shares"] for r in runs]
            t = statistics.mean(sum(sh.get(p, 0.0) * cost[p] for p in cost) for sh in shares)
            f4 = statistics.mean(sh.get("nvfp4", 0.0) for sh in shares)
            f8 = statistics.mean(sh.get("fp8", 0.0) for sh in shares)
            cells.append(f"{name} {t:.3f} ({f4:.2f} / {f8:.2f})")
        out.append(f"- budget {b}: " + "; ".join(cells))
    return out + [""]


def plot(record, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    budgets, ilp = record["budgets"], record["ilp"]
    fig, ax = plt.subplots(figsize=(7, 4.4))
    names = [n for n in plan_names(record) if not n.startswith("random-")]
    width = 0.8 / (len(names) + 1)
    for i, name in enumerate(names + ["random, mean of plans"]):
        means, halves = [], []
        for b in budgets:
            values = (random_mean(record, b) if name.startswith("random")
                      else losses(record, name, b))
            d, half = paired(values, losses(record, ilp, b))
            means.append(d)
            halves.append(half)
        x = [j + (i - len(names) / 2) * width for j in range(len(budgets))]
        ax.errorbar(x, means, yerr=halves, fmt="o", capsize=3, label=name)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(range(len(budgets)))
    ax.set_xticklabels([f"budget {b}" for b in budgets])
    ax.set_ylabel(f"final val loss − {ilp} (paired, 95% CI)")
    ax.set_title(f"plans vs {ilp}, {len(record['seeds'])} seeds ({record['preset']}); "
                 "above 0: worse")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


# ----------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--budgets", type=float, nargs="+")
    parser.add_argument("--budget-kind", choices=("nvfp4_fraction", "time"),
                        default="nvfp4_fraction")
    parser.add_argument("--device", choices=sorted(TIME_BUDGETS), default="blackwell",
                        help="whose relative costs a time budget uses")
    parser.add_argument("--random-plans", type=int)
    parser.add_argument("--replan-every", type=int, help="0 turns snip+replan off")
    parser.add_argument("--seeds", type=int, default=5, help="paired seeds per plan")
    parser.add_argument("--fitted-weights", default=None,
                        help="JSON from analyze_sensitivity.py (default: "
                             "fitted-weights-<preset>.json in --out, if present)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--report", action="store_true",
                        help="only rewrite the .md and .png from the run's .json in --out")
    args = parser.parse_args(argv)
    timed = args.budget_kind == "time"
    stem = Path(args.out) / (f"results-{args.preset}" + (f"-time-{args.device}" if timed
                                                          else ""))
    if args.report:
        record = json.loads(stem.with_suffix(".json").read_text())
        stem.with_suffix(".md").write_text(markdown(record))
        plot(record, stem.with_suffix(".png"))
        print(markdown(record))
        return record

    model_cfg, base_cfg, budgets, n_random, replan_every = PRESETS[args.preset]
    planting = planting_of(args.preset)
    if args.steps:
        base_cfg = dataclasses.replace(base_cfg, steps=args.steps,
                                       eval_every=min(base_cfg.eval_every, args.steps))
    budgets = tuple(args.budgets or (TIME_BUDGETS[args.device] if timed else budgets))
    n_random = args.random_plans if args.random_plans is not None else n_random
    replan_every = args.replan_every if args.replan_every is not None else replan_every
    if timed:
        replan_every = 0          # the re-planning comparison is the NVFP4-share run's
    # The costs a time budget is planned with, and plans are timed by.
    costs = device_cost(args.device)
    plan_options = ({"budget_kind": "time", "device": args.device} if timed else {})
    references = ("bf16", "all-nvfp4", "all-fp8") if timed else ("bf16", "all-nvfp4")
    weights_path = Path(args.fitted_weights or Path(args.out) / f"fitted-weights-{args.preset}.json")
    fitted = (json.loads(weights_path.read_text())["weights"] if weights_path.exists()
              else None)
    device = torch.device("cpu")
    torch.set_num_threads(1)
    corpus = corpus_mod.load()
    loss_fn = planner_loss(device)
    start = time.perf_counter()
    results, stats_seconds, infeasible = {}, [], {}

    for seed in range(args.seeds):
        train_cfg = dataclasses.replace(base_cfg, seed=seed)
        # One set of statistics on the initial model serves every ILP-based plan.
        model0 = build(model_cfg, seed, device, planting)
        candidates = lowprec.candidate_layers(model0)
        calibration = calibration_batches(corpus, model_cfg, train_cfg, device)
        collected = collect_stats(model0, candidates, calibration, loss_fn=loss_fn,
                                  progress=False)
        stats_seconds.append(collected.seconds)

        def run(name, plan, factory=None):
            results[f"{name}/{seed}"] = run_plan(plan, model_cfg, train_cfg, corpus, device,
                                                 f"{name}/{seed}", factory, planting)

        run("bf16", None)
        for ref in references[1:]:
            run(ref, uniform_plan(candidates, ref.removeprefix("all-")))
        replan_stream = corpus.train_batches(train_cfg.batch_size, model_cfg.seq_len,
                                             seed=seed + 2000)

        def fresh_calibration():
            return [next(replan_stream) for _ in range(train_cfg.calibration_batches)]

        for budget in budgets:
            def ilp_plan(**kw):
                return plan_from_stats(candidates, collected, budget=budget,
                                       **plan_options, **kw)
            plans = {"snip": ilp_plan()}
            if timed:
                try:
                    plans["snip-no-fp8"] = ilp_plan(objective=snip_without_fp8)
                except BudgetError as err:
                    # Hopper: emulated NVFP4 takes BF16's time, so without FP8 no plan
                    # saves any (recorded, and said in the report).
                    infeasible[f"snip-no-fp8@{budget}"] = str(err)
            plans["min-rel-error"] = ilp_plan(objective="relative_error")
            if not timed:
                plans["positional"] = positional_plan(candidates, collected, budget)
            if fitted is not None:
                plans["snip-fitted"] = ilp_plan(weights=fitted)
            for k in range(n_random):
                plans[f"random-{k}"] = ilp_plan(objective=random_objective(k))
            for name, plan in plans.items():
                run(f"{name}@{budget}", plan)
            if replan_every:
                def factory(model, optimizer, budget=budget):
                    return Replanner(model, every=replan_every, budget=budget,
                                     calibration=fresh_calibration, optimizer=optimizer,
                                     loss_fn=loss_fn, weights=fitted, progress=False)
                run(f"snip+replan@{budget}", plans["snip-fitted" if fitted else "snip"],
                    factory)

    seeds = list(range(args.seeds))
    snip_step = statistics.mean(results[f"snip@{b}/{s}"]["step_seconds"]
                                for b in budgets for s in seeds)
    replan_runs = [results[f"snip+replan@{b}/{s}"] for b in budgets for s in seeds
                   if replan_every]
    record = {
        "preset": args.preset, "model_config": dataclasses.asdict(model_cfg),
        "train_config": dataclasses.asdict(base_cfg), "budgets": list(budgets),
        "budget_kind": args.budget_kind,
        "device": args.device if timed else None,
        "device_time_cost": dict(costs.time) if timed else None,
        "planting": dataclasses.asdict(planting) if planting else None,
        "references": list(references),
        "seeds": seeds, "random_plans": n_random, "replan_every": replan_every,
        "ilp": "snip-fitted" if fitted is not None else "snip",
        "fitted_weights": fitted, "fitted_weights_file": str(weights_path.name),
        "corpus": corpus.describe(), "device_run": str(device),
        "torch": torch.__version__, "pulp": __import__("pulp").__version__,
        "overhead": {
            "stats_seconds": statistics.mean(stats_seconds),
            "calibration_batches": base_cfg.calibration_batches,
            "step_seconds": snip_step,
            "stats_in_steps": statistics.mean(stats_seconds) / snip_step,
            # What Replanner(every="auto") would choose at this cost and step time.
            "auto_interval_steps": math.ceil(statistics.mean(stats_seconds)
                                             / (DEFAULT_MAX_OVERHEAD * snip_step)),
            "replan_share": (statistics.mean(r["replan_seconds"] / r["train_seconds"]
                                             for r in replan_runs) if replan_runs else 0.0),
        },
        "results": results, "infeasible": infeasible,
        "seconds": time.perf_counter() - start,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1))
    stem.with_suffix(".md").write_text(markdown(record))
    plot(record, stem.with_suffix(".png"))
    print(markdown(record))
    return record


if __name__ == "__main__":
    main()
