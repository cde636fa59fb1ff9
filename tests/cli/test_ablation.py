"""`lowprec demo --ablation` on the tiny preset: every configuration runs, per seed, and
the summary pairs each seed with the BF16 run of the same seed."""

import importlib.util
import json
import math

import pytest

from lowprec import cli
from lowprec.demo import ablation


def test_quick_ablation_record_and_summary(tmp_path, capsys):
    status = cli.main(["demo", "--ablation", "--quick", "--steps", "3", "--seeds", "2",
                       "--no-progress", "--out", str(tmp_path)])
    assert status == 0
    record = json.loads((tmp_path / "ablation.json").read_text())
    assert list(record["runs"]) == list(ablation.CONFIGS)
    for name, runs in record["runs"].items():
        assert [run["seed"] for run in runs] == [0, 1], name
        assert all(len(run["train_loss"]) == 3 for run in runs), name
    shares = {name: runs[0]["nvfp4_share"] for name, runs in record["runs"].items()}
    assert shares["bf16"] == 0.0 and shares["all_nvfp4"] == pytest.approx(1.0)
    for name in ("nvfp4", "no_rht", "no_sr", "no_2d"):
        assert shares[name] == pytest.approx(0.5), name
    # The switches really reach the layers' recipes.
    recipe = record["runs"]["no_sr"][0]["plan"]["meta"]["recipe"]
    assert recipe["stochastic_rounding"] is False and recipe["rht"] is True

    rows = {row["config"]: row for row in ablation.summary_rows(record)}
    assert rows["bf16"]["gaps"] == [0.0, 0.0]
    for name, runs in record["runs"].items():
        base = record["runs"]["bf16"]
        expected = [(r["final_val_loss"] - b["final_val_loss"]) / b["final_val_loss"]
                    for r, b in zip(runs, base)]
        assert all(math.isclose(g, e) for g, e in zip(rows[name]["gaps"], expected))
    out = capsys.readouterr().out
    assert "worse than the full recipe in" in out and "no_2d" in out
    # On a CPU the high-precision run is FP32 and the table says so, not "bf16".
    table_rows = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "fp32" in table_rows and "bf16" not in table_rows
    assert "gap vs fp32" in out
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert "pip install matplotlib" in out


def test_experiment_script_writes_its_three_result_files(tmp_path):
    """lowprec.experiments.ablation: the module that produced the committed results."""
    from lowprec.experiments import ablation as script

    assert script.main(["--preset", "quick", "--steps", "2", "--seeds", "1",
                        "--configs", "bf16", "no_sr", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "ablation.json").read_text())
    assert list(record["runs"]) == ["bf16", "no_sr"] and record["device"]["torch"]
    assert "no_sr" in (tmp_path / "ablation.md").read_text()
