"""lowprec.experiments.planner.compare_plans: the time-budget mode and the planted-model
report (the experiment itself is experiments/planner/; these run its smoke preset).

Mutations tried: counting a planted unit as kept when only its fprop is BF16
(test_planted_lines_count_the_seeds_that_keep_every_planted_unit fails); running
snip-no-fp8 on Hopper without catching the budget error (the Hopper test fails).
"""

import lowprec
from lowprec.experiments.planner import compare_plans


def test_time_budget_on_hopper_uses_fp8_and_records_what_cannot_be_met(tmp_path):
    """On Hopper emulated NVFP4 takes BF16's time, so a time budget below 1 is met with
    FP8 only, and the NVFP4/BF16-only ILP cannot meet it (recorded, not run)."""
    record = compare_plans.main(["--preset", "smoke", "--seeds", "2", "--budget-kind",
                                 "time", "--device", "hopper", "--out", str(tmp_path)])
    cost = record["device_time_cost"]
    assert cost["nvfp4"] == cost["bf16"] == 1.0
    assert set(record["infeasible"]) == {f"snip-no-fp8@{b}" for b in record["budgets"]}
    for key, result in record["results"].items():
        if "@" in key:
            budget = float(key.split("@")[1].split("/")[0])
            shares = result["shares"]
            assert shares.get("nvfp4", 0.0) == 0.0
            # time = bf16 share * 1 + fp8 share * 0.5 <= budget (the ILP meets it).
            assert shares["bf16"] + 0.5 * shares["fp8"] <= budget + 1e-9, key
    text = (tmp_path / "results-smoke-time-hopper.md").read_text()
    assert "Plans that cannot meet their budget (not run): `snip-no-fp8@0.6`" in text
    # --report rewrites the same report from the JSON alone.
    (tmp_path / "results-smoke-time-hopper.md").unlink()
    compare_plans.main(["--preset", "smoke", "--budget-kind", "time", "--device", "hopper",
                        "--out", str(tmp_path), "--report"])
    assert (tmp_path / "results-smoke-time-hopper.md").read_text() == text


def test_planted_lines_count_the_seeds_that_keep_every_planted_unit():
    def run(a, b):
        return {"plan": {"a": a, "b": b, "c": "nvfp4/nvfp4/nvfp4"}}
    record = {"planting": {"layers": ["a", "b"]}, "budgets": [0.5], "seeds": [0, 1, 2],
              "random_plans": 0, "results": {
                  # seed 0 keeps both; seed 1 has b's dgrad in NVFP4; seed 2 keeps both
                  # out of NVFP4 with FP8 (kept: not NVFP4).
                  "snip@0.5/0": run("bf16/bf16/nvfp4", "bf16/bf16/bf16"),
                  "snip@0.5/1": run("bf16/bf16/bf16", "bf16/nvfp4/bf16"),
                  "snip@0.5/2": run("fp8/fp8/nvfp4", "bf16/bf16/bf16"),
                  "positional@0.5/0": run("nvfp4/bf16/bf16", "bf16/bf16/bf16"),
                  "positional@0.5/1": run("nvfp4/nvfp4/bf16", "bf16/bf16/bf16"),
                  "positional@0.5/2": run("bf16/bf16/bf16", "bf16/bf16/bf16")}}
    lines = compare_plans.planted_lines(record)
    assert "| snip | 2 |" in lines and "| positional | 1 |" in lines


def test_a_full_plan_record_reads_as_layer_precisions():
    plan = lowprec.Plan([lowprec.LayerPlan("fc", (16, 32), lowprec.Recipe("nvfp4", "fp8",
                                                                          "bf16"), "test")],
                        {})
    assert compare_plans.layer_precisions({"plan": plan.to_json()}) == {"fc": "nvfp4/fp8/bf16"}
    assert compare_plans.layer_precisions({"plan": None}) == {}
    compact = {"fc": "bf16/bf16/bf16"}
    assert compare_plans.layer_precisions({"plan": compact}) == compact
