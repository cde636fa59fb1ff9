"""Two gloo ranks on localhost end with the identical plan (and the same errors)."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

WORKER = Path(__file__).with_name("dist_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_ranks_get_identical_plans(tmp_path):
    done = subprocess.run([sys.executable, str(WORKER), str(free_port()), str(tmp_path)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for key in ("plan", "replan"):
        assert ranks[0][key] == ranks[1][key]                 # byte-identical JSON
        meta = json.loads(ranks[0][key])["meta"]
        assert meta["world_size"] == 2 and meta["calibration_batches"] == 4
    assert json.loads(ranks[0]["replan"])["meta"]["nvfp4_fraction"] >= 0.75
    # rank 0 hit the error; rank 1 raised the same one instead of hanging
    assert ranks[0]["error"] == ranks[1]["error"]
    assert ranks[0]["error"].startswith("BudgetError: budget=0.999 cannot be met")
