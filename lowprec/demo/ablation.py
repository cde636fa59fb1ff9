"""Recipe ablation: which parts of the NVFP4 recipe does a small model need?

Trains the demo GPT with BF16, the full recipe (default BF16 blocks), the recipe without
each of its switches (RHT, stochastic rounding, 2-D weight scaling), and with every
layer in NVFP4 (no BF16 blocks), over several seeds. The paper (arXiv 2509.25149) finds
that removing any one of these hurts a 12B model; this is the same test at toy scale.

Gaps are paired: each seed's loss is compared with the BF16 run of the same seed (same
initial weights, same batches), which removes the seed-to-seed spread that the
configurations share.
"""

import dataclasses
import logging
import statistics
import time

import torch

import lowprec
from lowprec.demo import corpus as corpus_mod
from lowprec.demo import report, train
from lowprec.table import format_table

# Library messages go to logging; the CLI passes ``log=print`` for its console output.
LOGGER = logging.getLogger(__name__)

# name -> (what, convert function, recipe)
CONFIGS = {
    "bf16": ("high precision, every layer (FP32 on a CPU, BF16 autocast on a GPU)",
             train.convert_bf16, None),
    "nvfp4": ("full recipe, default BF16 blocks", train.convert_default, lowprec.Recipe()),
    "no_rht": ("recipe without RHT", train.convert_default,
               lowprec.Recipe(rht=False)),
    "no_sr": ("recipe without stochastic rounding", train.convert_default,
              lowprec.Recipe(stochastic_rounding=False)),
    "no_2d": ("recipe with 1x16 weight scales (no 2-D)", train.convert_default,
              lowprec.Recipe(weight_2d=False)),
    "all_nvfp4": ("full recipe, every layer NVFP4 (no BF16 blocks)",
                  train.convert_all_nvfp4, lowprec.Recipe()),
}


def run_ablation(preset="cpu", seeds=(0, 1), steps=None, configs=None, device=None,
                 progress=True, log=None, threads=None):
    """Train every configuration for every seed. Returns a JSON-ready record.

    ``log(text)`` takes one line per finished run (default: ``LOGGER.info``, the
    ``lowprec.demo.ablation`` logger).
    """
    log = log or LOGGER.info
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model_cfg, base_cfg = train.PRESETS[preset]
    if steps is not None:
        base_cfg = dataclasses.replace(base_cfg, steps=steps,
                                       eval_every=min(base_cfg.eval_every, steps))
    names = list(configs or CONFIGS)
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise ValueError(f"unknown ablation config(s) {unknown}; known: {list(CONFIGS)}")
    corpus = corpus_mod.load()
    runs = {name: [] for name in names}
    start = time.perf_counter()
    with train.cpu_threads(device, threads):
        used_threads = torch.get_num_threads()
        _train_all(runs, names, seeds, base_cfg, corpus, model_cfg, device, progress, log)
    return {"preset": preset, "seeds": list(seeds),
            "model_config": dataclasses.asdict(model_cfg),
            "train_config": dataclasses.asdict(base_cfg), "corpus": corpus.describe(),
            "device_type": device.type, "threads": used_threads,
            "backend": train.auto_backend(device),
            "configs": {n: CONFIGS[n][0] for n in names},
            "runs": runs, "seconds": time.perf_counter() - start}


def _train_all(runs, names, seeds, base_cfg, corpus, model_cfg, device, progress, log):
    for seed in seeds:
        cfg = dataclasses.replace(base_cfg, seed=seed)
        for name in names:
            _, convert_fn, recipe = CONFIGS[name]
            run = train.run_config(f"{name} s{seed}", convert_fn, corpus, model_cfg, cfg,
                                   device, {"recipe": recipe}, progress=progress)
            run["seed"] = seed
            run["plan"] = report.plan_json(run["plan"])
            runs[name].append(run)
            log(f"{label(name, device.type):<10} seed {seed}: "
                f"final val loss {run['final_val_loss']:.4f} on "
                f"{cfg.final_eval_batches} batches "
                f"({run['seconds']:.0f} s)")


def label(name, device_type):
    """What a reader sees for a config: the high-precision run is "fp32" on a CPU."""
    return train.high_precision_label(device_type) if name == "bf16" else name


def _mean_std(values):
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else float("nan"))


def summary_rows(record, baseline="bf16"):
    """Per config: losses per seed, mean, and the paired relative gap to ``baseline``."""
    base = {run["seed"]: run["final_val_loss"] for run in record["runs"][baseline]}
    rows = []
    for name, runs in record["runs"].items():
        losses = [run["final_val_loss"] for run in runs]
        gaps = [report.relative_gap(run["final_val_loss"], base.get(run["seed"]))
                for run in runs]
        mean, std = _mean_std(losses)
        gap_mean, gap_std = _mean_std(gaps)
        rows.append({"config": name, "what": record["configs"][name],
                     "nvfp4_share": runs[0]["nvfp4_share"],
                     "losses": losses, "mean": mean, "std": std,
                     "gaps": gaps, "gap_mean": gap_mean, "gap_std": gap_std,
                     "diverged": sum(run["diverged"] for run in runs)})
    return rows


def verdicts(rows, reference="nvfp4"):
    """Does removing each part hurt? Compared per seed with the full recipe (paired)."""
    by_name = {row["config"]: row for row in rows}
    if reference not in by_name:
        return []
    ref = by_name[reference]["losses"]
    out = []
    for name in ("no_rht", "no_sr", "no_2d", "all_nvfp4"):
        if name not in by_name:
            continue
        losses = by_name[name]["losses"]
        deltas = [a - b for a, b in zip(losses, ref)]
        worse = sum(d > 0 for d in deltas)
        mean, std = _mean_std(deltas)
        out.append(f"{name}: worse than the full recipe in {worse} of {len(ref)} seeds "
                   f"(loss difference per seed {' / '.join(f'{d:+.4f}' for d in deltas)}; "
                   f"mean {mean:+.4f}, sd {std:.4f})")
    return out


def format_summary(record):
    rows = summary_rows(record)
    # The config key stays "bf16" (it names the recipe); the label says what ran.
    high = label("bf16", record["device_type"])
    seeds = ", ".join(str(s) for s in record["seeds"])
    table = format_table(
        ("config", "what", "NVFP4 FLOPs", f"final val loss (seeds {seeds})",
         "mean +- std", f"gap vs {high} (paired, mean +- std)"),
        [(label(row["config"], record["device_type"]), row["what"],
          f"{100 * row['nvfp4_share']:.1f}%",
          " / ".join(f"{x:.4f}" for x in row["losses"]),
          f"{row['mean']:.4f} +- {row['std']:.4f}",
          "-" if row["config"] == "bf16" else
          f"{100 * row['gap_mean']:+.2f}% +- {100 * row['gap_std']:.2f}%")
         for row in rows])
    return table + "\n\n" + "\n".join(verdicts(rows))


def plot(record, path, title):
    """Left: validation loss averaged over seeds. Right: each seed's final loss per config,
    one grey line per seed (the pairing the gaps use). Returns ``(path, None)`` or
    ``(None, why)`` when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None, (f"matplotlib is not installed, so no plot was drawn: "
                      f"{report.MATPLOTLIB_HINT}")
    names = list(record["runs"])
    fig, (ax_curve, ax_final) = plt.subplots(1, 2, figsize=(12, 4.4))
    for i, name in enumerate(names):
        runs = record["runs"][name]
        steps = [step for step, _ in runs[0]["val"]]
        mean = [statistics.fmean(run["val"][j][1] for run in runs) for j in range(len(steps))]
        ax_curve.plot(steps, mean, marker="o", ms=3, color=f"C{i}",
                      label=label(name, record["device_type"]))
    tail = [statistics.fmean(run["val"][j][1] for run in runs)
            for runs in record["runs"].values() for j in range(len(runs[0]["val"]))
            if runs[0]["val"][j][0] >= 0.25 * record["train_config"]["steps"]]
    if tail:
        ax_curve.set_ylim(min(tail) - 0.03, max(tail) + 0.03)
    ax_curve.set(title=f"validation loss, mean of {len(record['seeds'])} seeds "
                       "(zoomed past 25% of steps)", xlabel="step",
                 ylabel="cross-entropy (nats/byte)")
    ax_curve.legend(fontsize=8)
    for seed_index, seed in enumerate(record["seeds"]):
        finals = [record["runs"][name][seed_index]["final_val_loss"] for name in names]
        ax_final.plot(range(len(names)), finals, color="0.75", lw=0.8, zorder=1)
        ax_final.scatter(range(len(names)), finals, color=[f"C{i}" for i in range(len(names))],
                         s=18, zorder=2, label=None)
    means = [statistics.fmean(run["final_val_loss"] for run in record["runs"][name])
             for name in names]
    ax_final.scatter(range(len(names)), means, marker="_", s=400, color="k", zorder=3,
                     label="mean over seeds")
    ax_final.set_xticks(range(len(names)), [label(n, record["device_type"]) for n in names],
                        rotation=20)
    ax_final.set(title="final validation loss per seed (grey: same seed)",
                 ylabel="cross-entropy (nats/byte)")
    ax_final.legend(fontsize=8)
    for ax in (ax_curve, ax_final):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path, None
