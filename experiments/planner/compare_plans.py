"""Does the SNIP ILP plan beat simple heuristics at the same NVFP4 budget?

On the demo's small byte-level GPT (``lowprec.demo``: a corpus shipped with Python), at
each budget (the least fraction of linear-layer FLOPs in NVFP4), train from the same
initial weights on the same batches with the precisions chosen by

- ``snip``: the planner's ILP on LD / dX / WD (``lowprec.planner``), planned once at init;
- ``snip+replan``: the same, re-planned every ``--replan-every`` steps (``Replanner``);
- ``min-rel-error``: the same ILP minimising the relative quantization error of each
  GEMM's output (the classic heuristic, same statistics, same budget constraint);
- ``positional``: NVFP4 from the first block on, in model order, until the budget is met
  (the last blocks stay high precision, like the default recipe);
- ``random-k``: the ILP with random costs (a random plan meeting the same budget);

and as references ``bf16`` (no quantization) and ``all-nvfp4`` (every candidate layer).
Reports the final validation loss of each, the planner's overhead (statistics time per
round in training steps) and the ILP's time on 500 layers.

    python experiments/planner/compare_plans.py --preset cpu          # ~1 h on 2 CPU cores
    python experiments/planner/compare_plans.py --preset smoke        # a minute: it runs

Writes ``results-<preset>.json``, ``results-<preset>.md`` and ``results-<preset>.png``
into ``--out`` (default: this directory).
"""

import argparse
import dataclasses
import importlib.util
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
from lowprec.demo.train import (PRESETS as DEMO_PRESETS, TrainConfig, build_model,
                                calibration_batches, evaluate, lr_at, planner_loss)
from lowprec.planner import Replanner, collect_stats, plan_from_stats
from lowprec.planner.cost import gemm_flops

HERE = Path(__file__).resolve().parent

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
        layers.append(lowprec.LayerPlan(name, tuple(module.weight.shape), *chosen[name],
                                        reason=reason, flops_share=3 * flops[name] / total))
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


def all_nvfp4_plan(candidates):
    layers = [lowprec.LayerPlan(name, tuple(m.weight.shape),
                                *(("bf16",) * 3 if forced else ("nvfp4",) * 3),
                                reason=forced or "every layer NVFP4")
              for name, m, forced in candidates]
    return lowprec.Plan(layers, {"planner": "all-nvfp4"})


# ----------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------

def train(model, corpus, cfg, device, replanner_factory=None, label=""):
    """AdamW (as the demo), cosine LR; optionally re-plan during training."""
    batches = corpus.train_batches(cfg.batch_size, model.cfg.seq_len, seed=cfg.seed)
    val_batches = corpus.val_batches(cfg.batch_size, model.cfg.seq_len, cfg.eval_batches)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": other, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=(0.9, 0.95))
    replanner = replanner_factory(model, optimizer) if replanner_factory else None
    torch.manual_seed(cfg.seed + 1)       # the same stochastic-rounding keys for every run
    losses, start, stats_seconds = [], time.perf_counter(), 0.0
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model(*next(batches))
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if replanner is not None:
            t0 = time.perf_counter()
            if replanner.step() is not None:
                stats_seconds += time.perf_counter() - t0
        if step % max(1, cfg.steps // 10) == 0:
            print(f"  {label} step {step} loss {losses[-1]:.4f}", file=sys.stderr)
    seconds = time.perf_counter() - start
    return {"final_val_loss": evaluate(model, val_batches, device),
            "final_train_loss": statistics.mean(losses[-max(1, len(losses) // 10):]),
            "train_seconds": seconds, "replan_seconds": stats_seconds,
            "step_seconds": (seconds - stats_seconds) / max(1, len(losses)),
            "diverged": not math.isfinite(losses[-1]),
            "replans": len(replanner.history) if replanner else 0}


def run_plan(plan, model_cfg, train_cfg, corpus, device, label, replanner_factory=None):
    model = build_model(model_cfg, train_cfg.seed, device)
    if plan is not None:
        model = lowprec.convert(model, plan=plan)
    result = train(model, corpus, train_cfg, device, replanner_factory, label)
    final_plan = getattr(model, "lowprec_plan", None)
    result["nvfp4_fraction"] = final_plan.summary()["nvfp4"] if final_plan else 0.0
    result["plan"] = compact_plan(final_plan, full=label.startswith("snip"))
    print(f"{label}: val {result['final_val_loss']:.4f} (nvfp4 "
          f"{result['nvfp4_fraction']:.3f}, {result['train_seconds']:.0f} s)", file=sys.stderr)
    return result


# ----------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------

def summarize(results, budgets, n_random):
    rows = []
    methods = ["snip", "snip+replan", "min-rel-error", "positional"]
    for method in methods:
        cells = [results[f"{method}@{b}"]["final_val_loss"] if f"{method}@{b}" in results
                 else None for b in budgets]
        rows.append((method, cells))
    random_cells = []
    for b in budgets:
        values = [results[f"random-{k}@{b}"]["final_val_loss"] for k in range(n_random)]
        random_cells.append(values)
    return rows, random_cells


def markdown(record):
    budgets = record["budgets"]
    results = record["results"]
    rows, random_cells = summarize(results, budgets, record["random_plans"])
    lines = ["| plan | " + " | ".join(f"budget {b}" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for method, cells in rows:
        lines.append(f"| {method} | " + " | ".join("" if c is None else f"{c:.4f}"
                                                   for c in cells) + " |")
    lines.append("| random (mean ± sd; min..max) | " + " | ".join(
        f"{statistics.mean(v):.4f} ± {statistics.pstdev(v):.4f}; {min(v):.4f}..{max(v):.4f}"
        for v in random_cells) + " |")
    lines.append("| bf16 (reference) | " + " | ".join(
        f"{results['bf16']['final_val_loss']:.4f}" for _ in budgets) + " |")
    lines.append("| all-nvfp4 (reference) | " + " | ".join(
        f"{results['all-nvfp4']['final_val_loss']:.4f}" for _ in budgets) + " |")
    fractions = ["| NVFP4 FLOPs share (snip / positional) | " + " | ".join(
        f"{results[f'snip@{b}']['nvfp4_fraction']:.3f} / "
        f"{results[f'positional@{b}']['nvfp4_fraction']:.3f}" for b in budgets) + " |"]
    overhead = record["overhead"]
    text = ["Final validation loss (lower is better), "
            f"preset `{record['preset']}`, {record['train_config']['steps']} steps.", ""]
    text += lines + fractions + [""]
    text.append(f"Planner statistics: {overhead['stats_seconds']:.1f} s per round on "
                f"{overhead['calibration_batches']} calibration batches = "
                f"{overhead['stats_in_steps']:.1f} training steps of the snip plan "
                f"({overhead['step_seconds']:.2f} s/step); re-planning every "
                f"{record['replan_every']} steps costs {100 * overhead['replan_share']:.1f}% "
                f"of training time.")
    ilp_rows = record["ilp_timing"]
    text.append("ILP on 500 layers (1000 choices): " + "; ".join(
        f"{r['budget_kind']} {r['budget']}: median {r['median_s']:.3f} s, max "
        f"{r['max_s']:.3f} s" for r in ilp_rows) + f" (PuLP {record['pulp']}, HiGHS).")
    return "\n".join(text) + "\n"


def plot(record, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    budgets = record["budgets"]
    results = record["results"]
    rows, random_cells = summarize(results, budgets, record["random_plans"])
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, cells in rows:
        if any(c is not None for c in cells):
            ax.plot(budgets, cells, marker="o", label=method)
    for b, values in zip(budgets, random_cells):
        ax.scatter([b] * len(values), values, color="grey", s=12, alpha=0.7,
                   label="random plans" if b == budgets[0] else None)
    ax.axhline(results["bf16"]["final_val_loss"], color="k", ls="--", label="bf16")
    ax.axhline(results["all-nvfp4"]["final_val_loss"], color="r", ls=":", label="all-nvfp4")
    ax.set_xlabel("budget (least NVFP4 share of linear FLOPs)")
    ax.set_ylabel("final validation loss")
    ax.set_title(f"plans at equal NVFP4 budget ({record['preset']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


# ----------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--budgets", type=float, nargs="+")
    parser.add_argument("--random-plans", type=int)
    parser.add_argument("--replan-every", type=int, help="0 turns snip+replan off")
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model_cfg, train_cfg, budgets, n_random, replan_every = PRESETS[args.preset]
    changes = {"seed": args.seed}
    if args.steps:
        changes.update(steps=args.steps, eval_every=min(train_cfg.eval_every, args.steps))
    train_cfg = dataclasses.replace(train_cfg, **changes)
    budgets = tuple(args.budgets or budgets)
    n_random = args.random_plans if args.random_plans is not None else n_random
    replan_every = args.replan_every if args.replan_every is not None else replan_every
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    corpus = corpus_mod.load()
    loss_fn = planner_loss(device)
    start = time.perf_counter()

    # One set of statistics on the initial model serves every ILP-based plan.
    model0 = build_model(model_cfg, train_cfg.seed, device)
    candidates = lowprec.candidate_layers(model0)
    calibration = calibration_batches(corpus, model_cfg, train_cfg, device)
    collected = collect_stats(model0, candidates, calibration, loss_fn=loss_fn)
    print(f"statistics: {collected.seconds:.1f} s on {collected.batches} batches",
          file=sys.stderr)

    results = {"bf16": run_plan(None, model_cfg, train_cfg, corpus, device, "bf16"),
               "all-nvfp4": run_plan(all_nvfp4_plan(candidates), model_cfg, train_cfg,
                                     corpus, device, "all-nvfp4")}
    replan_stream = corpus.train_batches(train_cfg.batch_size, model_cfg.seq_len,
                                         seed=train_cfg.seed + 2000)

    def fresh_calibration():
        return [next(replan_stream) for _ in range(train_cfg.calibration_batches)]

    for budget in budgets:
        plans = {
            "snip": plan_from_stats(candidates, collected, budget=budget),
            "min-rel-error": plan_from_stats(candidates, collected, budget=budget,
                                             objective="relative_error"),
            "positional": positional_plan(candidates, collected, budget),
        }
        for k in range(n_random):
            plans[f"random-{k}"] = plan_from_stats(candidates, collected, budget=budget,
                                                   objective=random_objective(k))
        for name, plan in plans.items():
            results[f"{name}@{budget}"] = run_plan(plan, model_cfg, train_cfg, corpus,
                                                   device, f"{name}@{budget}")
        if replan_every:
            def factory(model, optimizer, budget=budget):
                return Replanner(model, every=replan_every, budget=budget,
                                 calibration=fresh_calibration, optimizer=optimizer,
                                 loss_fn=loss_fn, progress=False)
            results[f"snip+replan@{budget}"] = run_plan(
                plans["snip"], model_cfg, train_cfg, corpus, device,
                f"snip+replan@{budget}", replanner_factory=factory)

    snip_step = statistics.mean(results[f"snip@{b}"]["step_seconds"] for b in budgets)
    replan_runs = [results[f"snip+replan@{b}"] for b in budgets if replan_every]
    record = {
        "preset": args.preset, "model_config": dataclasses.asdict(model_cfg),
        "train_config": dataclasses.asdict(train_cfg), "budgets": list(budgets),
        "random_plans": n_random, "replan_every": replan_every,
        "corpus": corpus.describe(), "device": str(device),
        "torch": torch.__version__, "pulp": __import__("pulp").__version__,
        "overhead": {
            "stats_seconds": collected.seconds,
            "calibration_batches": collected.batches,
            "step_seconds": snip_step,
            "stats_in_steps": collected.seconds / snip_step,
            "replan_share": (statistics.mean(r["replan_seconds"] / r["train_seconds"]
                                             for r in replan_runs) if replan_runs else 0.0),
        },
        "ilp_timing": _sibling("ilp_timing").main(["--seeds", "3"]),
        "results": results, "seconds": time.perf_counter() - start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"results-{args.preset}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1))
    stem.with_suffix(".md").write_text(markdown(record))
    plot(record, stem.with_suffix(".png"))
    print(markdown(record))
    return record


def _sibling(name):
    """A script beside this one, imported by path (experiments/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    main()
