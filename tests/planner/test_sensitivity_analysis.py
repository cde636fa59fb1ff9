"""The estimators of lowprec.experiments.planner.analyze_sensitivity (the planner's
validation).

Expected values are worked by hand here, not taken from the code under test. Mutations
tried: ranks without tie averaging (test_spearman_with_ties fails), out_of_fold fitting
on every unit (test_out_of_fold_never_sees_the_held_out_block fails), nnls allowing a
negative weight (test_nnls_keeps_weights_non_negative fails).
"""

import json

import numpy as np
import pytest

from lowprec.experiments.planner import analyze_sensitivity, sensitivity


@pytest.fixture(scope="module")
def analysis():
    return analyze_sensitivity


def test_spearman_of_monotone_and_reversed(analysis):
    a = [0.1, 0.5, 0.2, 3.0]
    assert analysis.spearman(a, [1, 9, 4, 100]) == pytest.approx(1.0)
    assert analysis.spearman(a, [-1, -9, -4, -100]) == pytest.approx(-1.0)


def test_spearman_with_ties(analysis):
    # ranks of a: 1, 2.5, 2.5, 4; of b: 1, 2, 3, 4. Pearson of those by hand:
    # deviations (-1.5, 0, 0, 1.5) and (-1.5, -0.5, 0.5, 1.5): 4.5 / sqrt(4.5 * 5).
    got = analysis.spearman([1, 2, 2, 3], [10, 20, 30, 40])
    assert got == pytest.approx(4.5 / np.sqrt(4.5 * 5.0))


def test_nnls_recovers_non_negative_weights_and_ignores_the_intercept(analysis):
    rng = np.random.default_rng(0)
    x = rng.random((40, 3))
    y = x @ np.array([0.5, 0.0, 2.0]) + 7.0           # an intercept the fit must absorb
    assert np.allclose(analysis.nnls(x, y), [0.5, 0.0, 2.0])


def test_nnls_keeps_weights_non_negative(analysis):
    rng = np.random.default_rng(1)
    x = rng.random((40, 3))
    y = x @ np.array([1.0, -3.0, 0.5])                 # the best unconstrained fit is negative
    w = analysis.nnls(x, y)
    assert (w >= 0).all() and w[1] == 0.0


def test_out_of_fold_never_sees_the_held_out_block(analysis):
    # Block 0's units follow y = 5 * x0, the other blocks y = 1 * x0: a fit that saw block
    # 0 would predict it with a slope above 1.
    units = [(f"blocks.{b}.mlp.fc", g) for b in range(3) for g in ("fprop+dgrad", "wgrad")]
    x = np.array([[1.0 + i, 0.0, 0.0] for i in range(len(units))])
    y = np.array([(5.0 if layer.startswith("blocks.0.") else 1.0) * row[0]
                  for (layer, _), row in zip(units, x)])
    pred = analysis.out_of_fold(x, y, units)
    held_out = [i for i, (layer, _) in enumerate(units) if layer.startswith("blocks.0.")]
    # fitted on blocks 1 and 2 only: slope exactly 1, intercept 0
    assert np.allclose(pred[held_out], x[held_out, 0])


def test_sensitivity_and_analysis_run_end_to_end(analysis, tmp_path):
    """sensitivity.py's short-horizon mode on the smoke preset, then the analysis: every
    unit and format measured per seed, and a report with every statistic's row."""
    record = sensitivity.main(["--preset", "smoke", "--seeds", "2", "--horizon", "2",
                               "--checkpoint", "3", "--out", str(tmp_path)])
    # 2 blocks x 4 linears x 2 groups x 2 formats + the high-precision run, per seed
    assert len(record["runs"]) == 2 * (2 * 4 * 2 * 2 + 1)
    results = analysis.main(["--preset", "smoke", "--horizon", "2", "--dir", str(tmp_path)])
    assert [r["format"] for r in results] == ["nvfp4", "fp8"]
    report = (tmp_path / "sensitivity-smoke-h2.md").read_text()
    for row in ("LD (fprop units)", "snip objective, weights 1", "fitted objective"):
        assert row in report

    # A planted effect: each unit's measured loss increase, per seed, set to its relative
    # GEMM error in that seed's statistics (summed over the unit's GEMMs), so that the
    # "rel error" statistic ranks the units exactly as the effects do. The analysis must
    # find it: Spearman +1 for that row and the planted means as the effects. (Planting
    # an effect in the model itself would need training runs far beyond a test's time.)
    path = tmp_path / "sensitivity-smoke-h2.json"
    data = json.loads(path.read_text())
    gemms = {"fprop+dgrad": ("fprop", "dgrad"), "wgrad": ("wgrad",)}
    planted = {}
    for key, run in data["runs"].items():
        fmt, *rest = key.split("/")
        if fmt == "bf16":
            continue
        layer, group, seed = rest
        rel = data["stats_init"][seed][layer]["rel"]
        effect = sum(rel[g][fmt] for g in gemms[group])
        run["final_val_loss"] = data["runs"][f"bf16/{seed}"]["final_val_loss"] + effect
        planted.setdefault((fmt, f"{layer} {group}"), []).append(effect)
    path.write_text(json.dumps(data))
    results = analysis.main(["--preset", "smoke", "--horizon", "2", "--dir", str(tmp_path)])
    for result in results:
        row = next(r for r in result["rows"] if r["statistic"] == "rel error (all units)")
        assert row["spearman"] == pytest.approx(1.0), result["format"]
        want = [np.mean(planted[(result["format"], unit)]) for unit in result["units"]]
        assert np.allclose(result["effect"], want, rtol=1e-9, atol=0), result["format"]
        assert len(set(np.round(want, 12))) == len(want)     # distinct: a real ranking


def test_planted_units_are_ranked_from_the_largest(analysis):
    units = [("a", "fprop+dgrad"), ("a", "wgrad"), ("b", "fprop+dgrad"), ("b", "wgrad")]
    record = {"planting": {"layers": ["b"]}}
    effect = [0.1, 0.0, 0.5, 0.2]
    ld = [2.0, float("nan"), 1.0, float("nan")]          # LD applies to fprop units only
    (row,) = analysis.planted_ranks(record, units, effect, {"LD": ld})
    # b's effect 0.5 is the largest of 4; its LD 1.0 is second of the 2 fprop units.
    assert row["unit"] == "b fprop+dgrad" and row["effect_rank"] == 1
    assert row["ranks"] == {"LD": 2} and row["of"] == {"LD": 2}
    assert analysis.planted_ranks({}, units, effect, {"LD": ld}) == []
