"""Ground truth for the planner: the measured loss increase of each planning unit alone.

A planning unit is what the ILP decides on: one (layer, GEMM group) with the planner's
default groups, ``fprop+dgrad`` (both read W's quantized copy) and ``wgrad``. For every
unit and format (NVFP4, FP8), the demo GPT is trained with that unit alone in the format
and everything else in high precision, from the same initialisation, on the same batches
and with the same stochastic-rounding keys as the high-precision run of the same seed.
The unit's effect is the mean over seeds of the paired difference of the final
validation loss to that run, with its standard error.

For each seed the script also records the planner's statistics (``collect_stats``: LD,
DX, WD and the relative errors) on the initial model and on the trained high-precision
model with its optimizer, so that ``analyze_sensitivity.py`` can rank units by each
statistic, check the ranking against the measured effects, and measure how much the
ranking drifts during training.

With ``--horizon K --checkpoint T`` the same is measured over a short horizon instead:
the high-precision model is trained to step T, and from that checkpoint (weights and
optimizer state) each unit alone is quantized for the next K steps, on the same batches
and rounding keys as the high-precision continuation; the effect is the difference of
the validation losses after those K steps, and the statistics are taken at the
checkpoint with its optimizer (what a re-planner sees at step T). Over a short horizon
the trajectories have little room to diverge chaotically, so the effect of one unit is
not buried under the run-to-run noise of a whole training run.

    python -m lowprec.experiments.planner.sensitivity --preset cpu --seeds 4  # whole runs
    python -m lowprec.experiments.planner.sensitivity --preset cpu --seeds 12 --horizon 20 \
        --checkpoint 100                                                   # short horizon
    python -m lowprec.experiments.planner.sensitivity --preset smoke --seeds 1  # a minute
    python -m lowprec.experiments.planner.sensitivity --preset planted-mlp1 --seeds 5

Presets ``planted-<layout>`` are the ``cpu`` preset on the model with planted massive
activations (``planted.py``).

Writes ``sensitivity-<preset>.json`` (``sensitivity-<preset>-h<K>.json`` for a horizon)
into ``--out`` (default: experiments/planner/ under the current directory); runs already in that file are kept, so an
interrupted run resumes.
"""

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

import lowprec
from lowprec.demo import corpus as corpus_mod
from lowprec.demo.model import GPTConfig
from lowprec.demo.train import TrainConfig, calibration_batches, make_optimizer, planner_loss
# compare_plans: its training loop, so that both experiments match.
from lowprec.experiments.planner import RESULTS, compare_plans as compare
from lowprec.experiments.planner.planted import LAYOUTS, build, freeze, planting_of
from lowprec.names import GEMMS
from lowprec.planner import collect_stats
from lowprec.planner.builder import DEFAULT_GEMM_GROUPS

# The planner's own decision units: "fprop+dgrad" and "wgrad".
GROUPS = {"+".join(group): group for group in DEFAULT_GEMM_GROUPS}

PRESETS = {
    "smoke": (GPTConfig(d_model=32, n_layer=2, n_head=2, seq_len=16),
              TrainConfig(steps=6, batch_size=4, eval_every=3, eval_batches=1,
                          calibration_batches=1, warmup_fraction=0.2)),
    # compare_plans.py's "cpu" preset, the final loss on 16 validation batches.
    "cpu": (GPTConfig(d_model=32, n_layer=4, n_head=2, seq_len=32),
            TrainConfig(steps=150, batch_size=16, eval_every=50, eval_batches=16,
                        calibration_batches=4)),
}
# The cpu preset on the model with planted massive activations (planted.py).
PRESETS.update({f"planted-{layout}": PRESETS["cpu"] for layout in LAYOUTS})


def unit_plan(candidates, layer, group, fmt):
    """Every candidate high precision except ``group``'s GEMMs of ``layer`` in ``fmt``."""
    layers = []
    for name, module, forced in candidates:
        precisions = ["bf16"] * 3
        if layer is not None and name == layer:
            for gemm in GROUPS[group]:
                precisions[GEMMS.index(gemm)] = fmt
        layers.append(lowprec.LayerPlan(name, tuple(module.weight.shape),
                                        lowprec.Recipe(*precisions),
                                        reason=forced or f"sensitivity: {layer} {group}"))
    return lowprec.Plan(layers, {"planner": "sensitivity"})


def stats_record(collected):
    return {name: s.to_dict() for name, s in collected.layers.items()}


def horizon_seed(seed, args, model_cfg, cfg, corpus, loss_fn, record, save, planting=None):
    """One seed of the short-horizon measurement (module docstring)."""
    device = torch.device("cpu")
    runs = record["runs"]
    model = build(model_cfg, seed, device, planting)
    candidates = lowprec.candidate_layers(model)
    # Converted (all high precision) before training, so that applying a unit's plan
    # later only changes recipes: the optimizer keeps its parameters and state.
    lowprec.convert(model, plan=unit_plan(candidates, None, None, None))
    optimizer = make_optimizer(model, cfg)
    stream = corpus.train_batches(cfg.batch_size, model_cfg.seq_len, seed=seed)
    torch.manual_seed(seed + 1)
    for step in range(args.checkpoint):
        compare.train_step(model, optimizer, next(stream), step, cfg)
    horizon = [next(stream) for _ in range(args.horizon)]
    val = corpus.val_batches(cfg.batch_size, model_cfg.seq_len, cfg.eval_batches)
    if str(seed) not in record["stats_init"]:
        calibration = calibration_batches(corpus, model_cfg, cfg, device)
        record["stats_init"][str(seed)] = stats_record(
            collect_stats(model, lowprec.candidate_layers(model), calibration,
                          loss_fn=loss_fn, optimizer=optimizer, progress=False))
    checkpoint = copy.deepcopy((model, optimizer))

    def continue_with(plan, key):
        if key in runs:
            return
        m, opt = copy.deepcopy(checkpoint)
        if planting is not None:
            freeze(m, planting)           # the copy lost the planted model's gradient hooks
        if plan is not None:
            lowprec.convert(m, plan=plan)
        torch.manual_seed(seed + 2)           # the same rounding keys for every unit
        losses = [compare.train_step(m, opt, batch, args.checkpoint + i, cfg)
                  for i, batch in enumerate(horizon)]
        runs[key] = {"final_val_loss": compare.evaluate(m, val, device),
                     "mean_train_loss": sum(losses) / len(losses)}

    continue_with(None, f"bf16/{seed}")
    for fmt in args.formats:
        for layer, _, forced in candidates:
            if forced is None:
                for group in GROUPS:
                    continue_with(unit_plan(candidates, layer, group, fmt),
                                  f"{fmt}/{layer}/{group}/{seed}")
    save()
    print(f"seed {seed}: {len(runs)} runs", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--formats", nargs="+", default=["nvfp4", "fp8"],
                        choices=["nvfp4", "fp8"])
    parser.add_argument("--horizon", type=int, default=0,
                        help="steps after --checkpoint (0: whole training runs)")
    parser.add_argument("--checkpoint", type=int, default=100)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    model_cfg, base_cfg = PRESETS[args.preset]
    planting = planting_of(args.preset)
    device = torch.device("cpu")
    torch.set_num_threads(1)          # one core per run: the figures are per-core seconds
    corpus = corpus_mod.load()
    loss_fn = planner_loss(device)
    suffix = f"-h{args.horizon}" if args.horizon else ""
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"sensitivity-{args.preset}{suffix}.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    if record.get("preset") != args.preset:
        record = {"preset": args.preset, "model_config": dataclasses.asdict(model_cfg),
                  "train_config": dataclasses.asdict(base_cfg), "groups": GROUPS,
                  "horizon": args.horizon or None,
                  "planting": dataclasses.asdict(planting) if planting else None,
                  "checkpoint": args.checkpoint if args.horizon else None,
                  "torch": torch.__version__, "runs": {}, "stats_init": {},
                  "stats_end": {}}
    runs = record["runs"]

    def save():
        path.write_text(json.dumps(record, indent=1))

    if args.horizon:
        if not 0 < args.checkpoint < base_cfg.steps:
            raise SystemExit(f"--checkpoint must lie inside the preset's {base_cfg.steps} "
                             f"steps; got {args.checkpoint}")
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            horizon_seed(seed, args, model_cfg, dataclasses.replace(base_cfg, seed=seed),
                         corpus, loss_fn, record, save, planting)
        print(f"wrote {path} ({len(runs)} runs)")
        return record

    for seed in range(args.first_seed, args.first_seed + args.seeds):
        cfg = dataclasses.replace(base_cfg, seed=seed)
        model0 = build(model_cfg, seed, device, planting)
        candidates = lowprec.candidate_layers(model0)
        calibration = calibration_batches(corpus, model_cfg, cfg, device)
        if str(seed) not in record["stats_init"]:
            record["stats_init"][str(seed)] = stats_record(
                collect_stats(model0, candidates, calibration, loss_fn=loss_fn,
                              progress=False))
        key = f"bf16/{seed}"
        if key not in runs or str(seed) not in record["stats_end"]:
            model = build(model_cfg, seed, device, planting)
            t0 = time.perf_counter()
            runs[key], optimizer = compare.train(model, corpus, cfg, device, label=key,
                                                 return_optimizer=True)
            runs[key]["seconds"] = time.perf_counter() - t0
            record["stats_end"][str(seed)] = stats_record(
                collect_stats(model, lowprec.candidate_layers(model), calibration,
                              loss_fn=loss_fn, optimizer=optimizer, progress=False))
            save()
        for fmt in args.formats:
            for layer, _, forced in candidates:
                if forced is not None:
                    continue
                for group in GROUPS:
                    key = f"{fmt}/{layer}/{group}/{seed}"
                    if key in runs:
                        continue
                    plan = unit_plan(candidates, layer, group, fmt)
                    model = lowprec.convert(build(model_cfg, seed, device, planting), plan=plan)
                    t0 = time.perf_counter()
                    runs[key] = compare.train(model, corpus, cfg, device, label=key)
                    runs[key]["seconds"] = time.perf_counter() - t0
                    print(f"{key}: {runs[key]['final_val_loss']:.4f} "
                          f"(bf16 {runs[f'bf16/{seed}']['final_val_loss']:.4f})",
                          file=sys.stderr)
                    save()
    save()
    print(f"wrote {path} ({len(runs)} runs)")
    return record


if __name__ == "__main__":
    main()
