"""Tables, JSON and the loss plot of a demo (or ablation) run.

matplotlib is optional (not a dependency of lowprec): without it the tables and the JSON
are still written and the plot step says how to get it.
"""

import json
import math

from lowprec.table import format_table

MATPLOTLIB_HINT = "pip install matplotlib   (or: pip install 'lowprec[demo]')"


def relative_gap(loss, baseline):
    """(loss - baseline) / baseline; NaN when either is missing or not finite."""
    if loss is None or baseline is None or not (math.isfinite(loss)
                                                 and math.isfinite(baseline)):
        return float("nan")
    return (loss - baseline) / baseline


SPIKE_WINDOW = 5         # steps of recent history a loss is compared with
SPIKE_FACTOR = 1.3       # a spike: a loss above 1.3x the median of that history


def find_spikes(train_loss, window=SPIKE_WINDOW, factor=SPIKE_FACTOR):
    """``[step, loss]`` (steps from 1) of each training-loss spike.

    A step is a spike when its loss exceeds ``factor`` times the median loss of the
    ``window`` steps before it. The median of a short window ignores an earlier spike
    and follows the fast early fall of the loss; a healthy demo run's step-to-step noise
    (a batch of about a thousand tokens) stays within about 10%, far below 30%. A
    non-finite loss counts.
    """
    spikes = []
    for i in range(window, len(train_loss)):
        recent = sorted(train_loss[i - window:i])
        median = recent[window // 2]
        value = train_loss[i]
        if not math.isfinite(value) or value > factor * median:
            spikes.append([i + 1, value])
    return spikes


def spike_summary(runs):
    """One line per run saying whether its training loss spiked, and where."""
    lines = []
    for name, run in runs.items():
        label = run.get("label", name)
        spikes = run.get("spikes") or []
        if not spikes:
            lines.append(f"{label}: no training-loss spike")
            continue
        shown = ", ".join(f"step {step} ({loss:.2f})" for step, loss in spikes[:8])
        more = f" and {len(spikes) - 8} more" if len(spikes) > 8 else ""
        lines.append(f"{label}: {len(spikes)} training-loss spike(s) (loss > "
                     f"{SPIKE_FACTOR}x the median of the {SPIKE_WINDOW} steps before): "
                     f"{shown}{more}")
    return "\n".join(lines)


def _pct(x):
    return "n/a" if not math.isfinite(x) else f"{100 * x:+.2f}%"


def loss_table(runs, descriptions=None, baseline="bf16"):
    """One row per run: final validation loss and its relative gap to ``baseline``.

    Rows are named by each run's ``label`` (what it computes in) when it has one.
    """
    base = runs.get(baseline, {}).get("final_val_loss")
    base_label = runs.get(baseline, {}).get("label", baseline)
    rows = []
    for name, run in runs.items():
        rows.append((
            run.get("label", name), (descriptions or {}).get(name, ""),
            f"{100 * run['nvfp4_share']:.1f}%",
            f"{run['final_val_loss']:.4f}" + (" (diverged)" if run["diverged"] else ""),
            "-" if name == baseline else _pct(relative_gap(run["final_val_loss"], base)),
            f"{run['final_train_loss']:.4f}",
            f"{run['seconds']:.1f}"))
    return format_table(("config", "what", "NVFP4 FLOPs", "final val loss",
                         f"gap vs {base_label}", "train loss (last 10%)", "train s"), rows)


def plan_json(plan):
    """A Plan as JSON data (None and already-converted dicts pass through)."""
    return plan if plan is None or isinstance(plan, dict) else json.loads(plan.to_json())


def _run_json(run):
    return dict(run, plan=plan_json(run.get("plan")))


def run_record(record):
    """``record`` with every Plan replaced by its JSON form (JSON-ready throughout).

    ``record["runs"]`` maps a name to one run (demo) or a list of runs (ablation seeds).
    """
    out = dict(record)
    out["runs"] = {name: [_run_json(r) for r in run] if isinstance(run, list)
                   else _run_json(run) for name, run in record["runs"].items()}
    return out


def _strict(value):
    """NaN/inf -> None, so that the file is strict JSON (readable outside Python)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(record, path):
    with open(path, "w") as f:
        json.dump(_strict(run_record(record)), f, indent=1, allow_nan=False)
        f.write("\n")
    return path


def _moving_average(values, window):
    """Trailing mean over ``window`` steps (shorter at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_losses(curves, path, title):
    """Training loss (moving average, every raw step) and validation loss per configuration.

    ``curves`` maps a label to a list of runs (several seeds draw several lines of one
    colour). The training panel has a log-scale y axis over the whole range, so a spike
    stays on the plot (each one marked with an x) while the late differences remain
    readable. Returns ``(path, None)``, or ``(None, why)`` when matplotlib is missing.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")          # no display needed; must precede pyplot
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return None, f"matplotlib is not installed, so no plot was drawn: {MATPLOTLIB_HINT}"
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(11, 4.2))
    longest = max(len(run["train_loss"]) for runs in curves.values() for run in runs)
    window = max(1, longest // 25)
    for i, (label, runs) in enumerate(curves.items()):
        color = f"C{i}"
        for j, run in enumerate(runs):
            steps = range(1, len(run["train_loss"]) + 1)
            ax_train.plot(steps, run["train_loss"], color=color, alpha=0.3, lw=0.7)
            ax_train.plot(steps, _moving_average(run["train_loss"], window), color=color,
                          lw=1.4, label=label if j == 0 else None)
            spikes = [(step, loss) for step, loss in run.get("spikes") or []
                      if math.isfinite(loss)]
            if spikes:
                ax_train.scatter(*zip(*spikes), marker="x", s=40, color=color, zorder=3,
                                 label=f"{label} spike" if j == 0 else None)
            val_steps, val_loss = zip(*run["val"])
            ax_val.plot(val_steps, val_loss, color=color, marker="o", ms=3, lw=1.2,
                        label=label if j == 0 else None)
    smoothing = f"mean of {window} steps, raw steps faint" if window > 1 else "per step"
    ax_train.set_yscale("log")
    for set_formatter in (ax_train.yaxis.set_major_formatter,
                          ax_train.yaxis.set_minor_formatter):
        set_formatter(matplotlib.ticker.ScalarFormatter())      # 3, 4, 6 rather than 3x10^0
    ax_train.set(title=f"training loss ({smoothing}; log scale, x = spike)", xlabel="step",
                 ylabel="cross-entropy (nats/byte)")
    ax_val.set(title="validation loss (sampled; the table uses more batches)", xlabel="step")
    # Zoom the validation panel past the first 10% of steps (all runs start near
    # ln 256 = 5.5 and fall fast together), keeping every later point on the plot.
    late_val = [loss for runs in curves.values() for run in runs
                for step, loss in run["val"] if step >= longest // 10]
    n_points = min(len(run["val"]) for runs in curves.values() for run in runs)
    # Too few evaluations (a short run) leave nothing worth zooming into.
    if n_points >= 5 and all(math.isfinite(v) for v in late_val):
        ax_val.set_ylim(min(late_val) - 0.05, max(late_val) + 0.05)
    for ax in (ax_train, ax_val):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path, None
