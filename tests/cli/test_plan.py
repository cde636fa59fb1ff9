"""`lowprec plan`: the planner's plan for the demo model, printed and saved as JSON."""

import lowprec
from lowprec import cli


def test_plan_meets_the_budget_and_round_trips(tmp_path, capsys):
    path = tmp_path / "plan.json"
    assert cli.main(["plan", "--quick", "--budget", "0.6", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "linear FLOPs by precision" in out and "blocks.0.mlp.fc" in out
    assert out.startswith("torch CPU threads: 1 of ")
    # Every column of the table is explained, and the meta names the cost model honestly.
    header = next(line for line in out.splitlines() if line.startswith("layer "))
    legend = out.split("plan columns:\n", 1)[1]
    for column in ("layer", "shape", "FLOPs", "fprop", "dgrad", "wgrad", "LD fp4/fp8",
                   "WD fp4/fp8", "cost", "reason", "dX err", "sensitivity"):
        assert column in header or column in ("dX err", "sensitivity")
        assert f"  {column} " in legend, column
    assert " device=" not in out and "costs_for=" in out
    plan = lowprec.Plan.from_json(path.read_text())
    assert len(plan) == 8                                 # 2 blocks x 4 linears
    assert plan.summary()["nvfp4"] >= 0.6 - 1e-9
    assert plan.meta["budget"] == 0.6
