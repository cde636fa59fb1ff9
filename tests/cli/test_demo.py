"""`lowprec demo --quick`: it runs, and its JSON (and PNG, with matplotlib) are right."""

import json
import math
import re
from pathlib import Path

import pytest

import lowprec
from lowprec import cli


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    status = cli.main(["demo", "--quick", "--no-progress", "--out", str(out)])
    return status, out


def test_quick_demo_writes_a_run_record(quick_demo):
    status, out = quick_demo
    assert status == 0
    record = json.loads((out / "demo.json").read_text())
    assert set(record["runs"]) == {"bf16", "nvfp4", "planned"}
    steps = record["train_config"]["steps"]
    for name, run in record["runs"].items():
        assert len(run["train_loss"]) == steps, name
        assert all(math.isfinite(x) for x in run["train_loss"]), name
        assert not run["diverged"], name
        assert run["val"][0][0] == 0 and run["val"][-1][0] == steps, name
        # A few steps already beat the uniform guess ln(256) = 5.55 nats per byte.
        assert run["final_val_loss"] < math.log(256) - 0.3, (name, run["final_val_loss"])
    assert record["runs"]["bf16"]["plan"] is None
    # The default plan keeps the last of the two blocks in BF16: half the FLOPs NVFP4.
    default = record["runs"]["nvfp4"]
    assert default["nvfp4_share"] == pytest.approx(0.5)
    layers = {layer["name"]: layer for layer in default["plan"]["layers"]}
    assert layers["blocks.0.mlp.fc"]["fprop"] == "nvfp4"
    assert layers["blocks.1.mlp.fc"]["fprop"] == "bf16"
    # The planner met the budget it was given.
    assert record["runs"]["planned"]["nvfp4_share"] >= record["budget"] - 1e-9
    assert record["device"]["torch"]
    assert record["corpus"]["bytes"] > 100_000
    # Honest labels: the high-precision run computes in FP32 on a CPU.
    high = "bf16" if record["device_type"] == "cuda" else "fp32"
    assert record["runs"]["bf16"]["label"] == high
    assert all(isinstance(run["spikes"], list) for run in record["runs"].values())


def test_quick_demo_records_version_and_commit(quick_demo):
    _, out = quick_demo
    record = json.loads((out / "demo.json").read_text())
    assert record["lowprec"]["version"] == lowprec.__version__
    checkout = Path(lowprec.__file__).resolve().parent.parent / ".git"
    if checkout.exists():
        assert re.fullmatch(r"[0-9a-f]{40}", record["lowprec"]["commit"])
    else:
        assert record["lowprec"]["commit"] is None


def test_quick_demo_plot(quick_demo):
    pytest.importorskip("matplotlib")
    _, out = quick_demo
    png = (out / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_quick_demo_is_reproducible(quick_demo, tmp_path):
    """Same seed, same numbers: the bf16 and recipe runs repeat bit for bit."""
    _, out = quick_demo
    first = json.loads((out / "demo.json").read_text())
    from lowprec.demo import train
    again = train.run_demo("quick", progress=False, log=lambda *_: None,
                           configs=("bf16", "nvfp4"))
    for name in ("bf16", "nvfp4"):
        assert again["runs"][name]["train_loss"] == first["runs"][name]["train_loss"], name
