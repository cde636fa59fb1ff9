"""Do the planner's statistics predict the measured sensitivity? (``sensitivity.py``'s data)

For every planning unit (layer, GEMM group) the measured effect is the mean over seeds
of the paired loss increase over high precision when the unit alone is quantized. Each
statistic gives the unit a predicted cost, as the planner's ILP sees it:

* ``LD`` (fprop), ``DX`` (dgrad), ``WD`` (wgrad): the SNIP terms, each only for the units
  of its own GEMM group;
* ``rel``: the relative output error of the unit's GEMMs (the min-relative-error plan's
  cost);
* ``snip``: the planner's combined objective, ``LD/n_f + DX/n_d`` for a fprop+dgrad unit
  and ``WD/n_w`` for a wgrad unit, ``n_g`` the mean NVFP4 value of the term over layers
  (``builder._normalisers``), all weights 1;
* ``fitted``: the same terms with weights fitted by non-negative least squares on the
  measured effects, validated out of fold: the units of one transformer block are
  predicted by weights fitted on the other blocks only (so no unit is scored by a fit
  that saw it, nor by one that saw its own layer's other unit).

Reported: Spearman's rank correlation of each prediction with the measured effect,
with a 95% bootstrap interval that resamples seeds (measurement noise) and units (which
units we happened to have) together; the split-half reliability of the measurement
itself (Spearman between the effects measured on two halves of the seeds), which bounds
what any statistic can reach; and the drift of the ``snip`` ranking between the initial
and the trained model.

    python -m lowprec.experiments.planner.analyze_sensitivity --preset cpu

Reads ``sensitivity-<stem>.json`` (stem: the preset, ``-h<K>`` for a horizon run),
writes ``sensitivity-<stem>.md``, a plot of the effects ``sensitivity-<stem>.png``, and the
fitted weights in ``fitted-weights-<stem>.json``
(``compare_plans.py --fitted-weights``).
"""

import argparse
import json
from pathlib import Path

import numpy as np

from lowprec.experiments.planner import RESULTS
from lowprec.experiments.planner.compare_plans import T975
from lowprec.names import GEMMS
from lowprec.planner.builder import DEFAULT_GEMM_GROUPS, SNIP_METRIC

# Each group's SNIP terms as (metric, GEMM): fprop+dgrad -> LD, DX; wgrad -> WD.
TERMS = {"+".join(group): tuple((SNIP_METRIC[gemm], gemm) for gemm in group)
         for group in DEFAULT_GEMM_GROUPS}
BOOTSTRAP = 2000


# ----------------------------------------------------------------------------------
# Rank statistics
# ----------------------------------------------------------------------------------

def ranks(values):
    """Ranks 1..n with ties given their average rank."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        out[tied] = out[tied].mean()
    return out


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


# ----------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------

def load(record, fmt):
    """(units, seeds, effects [units, seeds]) for one format."""
    runs = record["runs"]
    seeds = sorted({int(k.split("/")[-1]) for k in runs if k.startswith(f"{fmt}/")})
    units = []
    for key in runs:
        parts = key.split("/")
        if parts[0] == fmt and (parts[1], parts[2]) not in units:
            units.append((parts[1], parts[2]))
    seeds = [s for s in seeds if all(f"{fmt}/{u}/{g}/{s}" in runs for u, g in units)]
    effects = np.array([[runs[f"{fmt}/{u}/{g}/{s}"]["final_val_loss"]
                         - runs[f"bf16/{s}"]["final_val_loss"] for s in seeds]
                        for u, g in units])
    return units, seeds, effects


def term_values(stats, units, fmt):
    """{term: [value per unit or nan]} for one seed's statistics (one dict per layer)."""
    out = {"ld": [], "dx": [], "wd": [], "rel": []}
    for layer, group in units:
        s = stats[layer]
        for term in ("ld", "dx", "wd"):
            mine = any(t == term for t, _ in TERMS[group])
            out[term].append(s[term].get(fmt, np.nan) if mine else np.nan)
        out["rel"].append(sum(s["rel"][g][fmt] for _, g in TERMS[group]))
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def features(stats_by_seed, units, fmt):
    """[units, 3] normalised (LD, DX, WD) columns, averaged over seeds; 0 where a term
    does not belong to the unit's group. Normalisers as the planner's: the mean NVFP4
    value of each term over layers (per seed)."""
    per_seed = []
    for stats in stats_by_seed:
        values = term_values(stats, units, fmt)
        nvfp4 = term_values(stats, units, "nvfp4")
        cols = []
        for term in ("ld", "dx", "wd"):
            norm = np.nanmean(nvfp4[term])
            cols.append(np.nan_to_num(values[term] / (norm if norm > 0 else 1.0)))
        per_seed.append(np.stack(cols, axis=1))
    return np.mean(per_seed, axis=0)


def raw_terms(stats_by_seed, units, fmt):
    per_seed = [term_values(stats, units, fmt) for stats in stats_by_seed]
    return {k: np.mean([p[k] for p in per_seed], axis=0) for k in per_seed[0]}


# ----------------------------------------------------------------------------------
# Fitted weights
# ----------------------------------------------------------------------------------

def nnls(x, y):
    """Non-negative weights of the columns of ``x`` for ``y``, with a free intercept
    (least squares on centred data, every active set enumerated: exact for 3 columns).

    The intercept absorbs what every unit shares (any perturbation of training moves
    the final loss a little); it is the same for every unit, so it does not change a
    ranking, and the planner does not use it."""
    x, y = x - x.mean(axis=0), y - y.mean()
    best, best_err = np.zeros(x.shape[1]), float(np.sum(y ** 2))
    n = x.shape[1]
    for mask in range(1, 2 ** n):
        cols = [i for i in range(n) if mask >> i & 1]
        w, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if np.any(w < 0):
            continue
        full = np.zeros(n)
        full[cols] = w
        err = float(np.sum((x @ full - y) ** 2))
        if err < best_err:
            best, best_err = full, err
    return best


def block_of(layer):
    parts = layer.split(".")
    return parts[1] if parts[0] == "blocks" and len(parts) > 1 else layer


def out_of_fold(x, y, units):
    """Prediction for every unit from weights fitted on the other blocks' units."""
    blocks = [block_of(layer) for layer, _ in units]
    pred = np.empty(len(units))
    for b in sorted(set(blocks)):
        test = np.array([blk == b for blk in blocks])
        w = nnls(x[~test], y[~test])
        pred[test] = x[test] @ w
    return pred


# ----------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------

def bootstrap(predict, effects, rng, mask=None):
    """95% interval of Spearman(prediction, mean effect) resampling seeds and units.

    ``predict(unit_index, seed_index) -> prediction per chosen unit`` lets the fitted
    objective be refitted on each resample (out of fold), so its interval includes the
    fit's own variance."""
    n_units, n_seeds = effects.shape
    units = np.arange(n_units) if mask is None else np.flatnonzero(mask)
    values = []
    for _ in range(BOOTSTRAP):
        u = rng.choice(units, size=len(units))
        s = rng.choice(n_seeds, size=n_seeds)
        measured = effects[np.ix_(u, s)].mean(axis=1)
        values.append(spearman(predict(u, s), measured))
    values = np.array(values)
    values = values[np.isfinite(values)]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def descending_rank(values, i):
    """1-based rank of ``values[i]`` from the largest, over the finite values (None if
    ``values[i]`` is not finite: the statistic does not apply to that unit)."""
    values = np.asarray(values, dtype=float)
    if not np.isfinite(values[i]):
        return None
    return int(np.sum(values[np.isfinite(values)] > values[i])) + 1


def planted_ranks(record, units, effect, predictions):
    """For a planted model (``planted.py``): each planted unit's rank by measured effect
    and by each statistic, out of the units the statistic applies to."""
    planting = record.get("planting")
    if not planting:
        return []
    out = []
    for layer in planting["layers"]:
        i = units.index((layer, "fprop+dgrad"))
        ranks_ = {name: descending_rank(v, i) for name, v in predictions.items()}
        out.append({"unit": f"{layer} fprop+dgrad", "effect_rank": descending_rank(effect, i),
                    "ranks": ranks_,
                    "of": {name: int(np.isfinite(np.asarray(v, float)).sum())
                           for name, v in predictions.items()}})
    return out


def analyse(record, fmt, rng):
    units, seeds, effects = load(record, fmt)
    stats_init = [record["stats_init"][str(s)] for s in seeds]
    stats_end = [record["stats_end"][str(s)] for s in seeds if str(s) in record["stats_end"]]
    mean = effects.mean(axis=1)
    se = effects.std(axis=1, ddof=1) / np.sqrt(len(seeds)) if len(seeds) > 1 else mean * 0
    x_init = features(stats_init, units, fmt)
    terms = raw_terms(stats_init, units, fmt)
    groups = np.array([g for _, g in units])
    rows = []

    def add(name, prediction, mask):
        m = np.asarray(mask)
        rho = spearman(prediction[m], mean[m])
        lo, hi = bootstrap(lambda u, s: prediction[u], effects, rng, m)
        rows.append({"statistic": name, "units": int(m.sum()), "spearman": rho,
                     "ci95": [lo, hi]})

    fd = groups == "fprop+dgrad"
    add("LD (fprop units)", terms["ld"], fd)
    add("DX (fprop+dgrad units)", terms["dx"], fd)
    add("WD (wgrad units)", terms["wd"], groups == "wgrad")
    everything = np.ones(len(units), bool)
    add("rel error (all units)", terms["rel"], everything)
    snip = x_init.sum(axis=1)
    add("snip objective, weights 1 (all units)", snip, everything)
    if stats_end:
        x_end = features(stats_end, units, fmt)
        add("snip objective on the trained model (all units)", x_end.sum(axis=1), everything)

    fitted_oof = out_of_fold(x_init, mean, units)
    rho = spearman(fitted_oof, mean)

    def refit(u, s):
        measured = effects[np.ix_(u, s)].mean(axis=1)
        return out_of_fold(x_init[u], measured, [units[i] for i in u])
    lo, hi = bootstrap(refit, effects, rng)
    rows.append({"statistic": "fitted objective, out of fold (all units)",
                 "units": len(units), "spearman": rho, "ci95": [lo, hi]})

    half = len(seeds) // 2
    reliability = (spearman(effects[:, :half].mean(axis=1), effects[:, half:].mean(axis=1))
                   if half >= 1 and len(seeds) - half >= 1 else float("nan"))
    drift = [spearman(features([a], units, fmt).sum(axis=1),
                      features([b], units, fmt).sum(axis=1))
             for a, b in zip(stats_init, stats_end)] if stats_end else []
    planted = planted_ranks(record, units, mean, {
        "LD": terms["ld"], "DX": terms["dx"], "WD": terms["wd"], "rel error": terms["rel"],
        "snip objective": snip, "fitted (out of fold)": fitted_oof})
    return {"format": fmt, "seeds": seeds, "units": [f"{u} {g}" for u, g in units],
            "effect": mean.tolist(), "effect_se": se.tolist(), "rows": rows,
            "planted": planted,
            "split_half_reliability": reliability,
            "snip_rank_init_vs_end": drift,
            "weights_all_units": dict(zip(GEMMS, nnls(x_init, mean).tolist()))}


def markdown(record, results):
    cfg, model = record["train_config"], record["model_config"]
    if record.get("horizon"):
        how = (f"effect: validation loss after {record['horizon']} steps from a "
               f"high-precision checkpoint at step {record['checkpoint']} of {cfg['steps']}; "
               f"statistics at the checkpoint, with its optimizer")
    else:
        how = (f"effect: final validation loss after {cfg['steps']} steps from "
               f"initialisation; statistics on the initial model")
    lines = [f"# Planner statistics vs measured sensitivity (preset `{record['preset']}`)", "",
             f"Demo GPT d_model {model['d_model']}, {model['n_layer']} blocks, seq "
             f"{model['seq_len']}, batch {cfg['batch_size']}; {how}; validation on "
             f"{cfg['eval_batches']} batches. Generated by `analyze_sensitivity.py`.", ""]
    for r in results:
        lines += [f"## {r['format']} ({len(r['seeds'])} seeds: {r['seeds']})", "",
                  "| statistic | units | Spearman | 95% bootstrap |", "|---|---|---|---|"]
        for row in r["rows"]:
            lo, hi = row["ci95"]
            lines.append(f"| {row['statistic']} | {row['units']} | {row['spearman']:+.2f} | "
                         f"{lo:+.2f} .. {hi:+.2f} |")
        w = r["weights_all_units"]
        lines += ["", f"Split-half reliability of the measured effects (Spearman of two "
                  f"halves of the seeds): {r['split_half_reliability']:+.2f}.",
                  ("Rank drift of the snip objective, initial vs trained model (Spearman), "
                   "per seed: " + ", ".join(f"{d:+.2f}" for d in r["snip_rank_init_vs_end"])
                   + "." if r["snip_rank_init_vs_end"] else ""),
                  f"Weights fitted on all units (normalised LD, DX, WD): fprop "
                  f"{w['fprop']:.3f}, dgrad {w['dgrad']:.3f}, wgrad {w['wgrad']:.3f}.", ""]
        if r["planted"]:
            names = list(r["planted"][0]["ranks"])
            lines += [f"Planted units ({record['planting']}): rank by measured effect and "
                      f"by each statistic (1 = largest; out of the units it applies to).", "",
                      "| planted unit | effect | " + " | ".join(names) + " |",
                      "|---|---|" + "---|" * len(names)]
            for p in r["planted"]:
                cells = [f"{p['ranks'][n]} / {p['of'][n]}" if p["ranks"][n] else "—"
                         for n in names]
                lines.append(f"| {p['unit']} | {p['effect_rank']} / {len(r['units'])} | "
                             + " | ".join(cells) + " |")
            lines.append("")
        n = len(r["seeds"])
        t = T975.get(n - 1, 1.96)
        lines += [f"Each unit's effect (mean over seeds of the paired loss increase), its "
                  f"standard error and 95% t interval ({n} seeds).", "",
                  "| unit | effect | s.e. | 95% interval |", "|---|---|---|---|"]
        order = np.argsort(r["effect"])[::-1]
        for i in order:
            e, se = r["effect"][i], r["effect_se"][i]
            lines.append(f"| {r['units'][i]} | {e:+.4f} | {se:.4f} | "
                         f"{e - t * se:+.4f} .. {e + t * se:+.4f} |")
        lines.append("")
    return "\n".join(lines)


def plot(record, results, path):
    """Each unit's measured effect with its 95% t interval, largest first, one panel per
    format; planted units (a planted model's) in red."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    planted = {f"{layer} fprop+dgrad" for layer in
               (record.get("planting") or {}).get("layers", ())}
    fig, axes = plt.subplots(len(results), 1, figsize=(9, 3.6 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results):
        t = T975.get(len(r["seeds"]) - 1, 1.96)
        order = np.argsort(r["effect"])[::-1]
        effect = np.array(r["effect"])[order]
        half = t * np.array(r["effect_se"])[order]
        names = [r["units"][i] for i in order]
        colors = ["tab:red" if n in planted else "tab:blue" for n in names]
        ax.bar(range(len(names)), effect, yerr=half, color=colors, capsize=2)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=6)
        ax.set_ylabel("final val loss − high precision")
        ax.set_title(f"{r['format']}: each unit alone, {len(r['seeds'])} seeds, 95% t "
                     f"interval ({record['preset']}; planted units red)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--horizon", type=int, default=0,
                        help="read sensitivity-<preset>-h<K>.json (sensitivity.py --horizon)")
    parser.add_argument("--dir", default=str(RESULTS))
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    stem = f"{args.preset}-h{args.horizon}" if args.horizon else args.preset
    record = json.loads((directory / f"sensitivity-{stem}.json").read_text())
    rng = np.random.default_rng(args.seed)
    formats = [f for f in ("nvfp4", "fp8") if any(k.startswith(f + "/") for k in record["runs"])]
    results = [analyse(record, fmt, rng) for fmt in formats]
    text = markdown(record, results)
    (directory / f"sensitivity-{stem}.md").write_text(text)
    plot(record, results, directory / f"sensitivity-{stem}.png")
    nvfp4 = next((r for r in results if r["format"] == "nvfp4"), None)
    weights_path = directory / f"fitted-weights-{stem}.json"
    fitted_row = None if nvfp4 is None else next(
        row for row in nvfp4["rows"] if row["statistic"].startswith("fitted"))
    if fitted_row is not None and not fitted_row["ci95"][0] > 0:
        # Adopted only when validated: the out-of-fold Spearman's 95% interval must
        # exclude zero. Otherwise the weights fit noise, and compare_plans.py runs
        # without a fitted plan.
        weights_path.unlink(missing_ok=True)
        print("no fitted weights written: out of fold, the fitted objective's Spearman "
              f"interval {fitted_row['ci95']} does not exclude 0")
    elif nvfp4 is not None:
        weights_path.write_text(json.dumps(
            {"weights": nvfp4["weights_all_units"], "source": f"sensitivity-{stem}.json",
             "seeds": nvfp4["seeds"]}, indent=1))
    print(text)
    return results


if __name__ == "__main__":
    main()
