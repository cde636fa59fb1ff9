"""Two gloo ranks on localhost end with the identical plan (and the same errors)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

WORKER = Path(__file__).with_name("dist_worker.py")


TIMEOUT_S = 300         # the whole worker (~30-60 s on a loaded 2-core machine)


def run_worker(tmp_path):
    """Run the 2-rank worker with a deadline; on timeout kill it and its ranks.

    The worker runs in a session of its own, so that killing the process group also ends
    the ranks it spawned (``subprocess.run``'s timeout would kill only the parent).
    """
    with subprocess.Popen([sys.executable, str(WORKER), str(tmp_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            pytest.fail(f"the 2-rank planner worker ran over {TIMEOUT_S} s; killed it and "
                        f"its ranks. stderr:\n{stderr[-4000:]}")
    return proc.returncode, stderr


needs_gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                               reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the two ranks wrote (one worker run serves every test here)."""
    out = tmp_path_factory.mktemp("ranks")
    returncode, stderr = run_worker(out)
    assert returncode == 0, stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@needs_gloo
def test_two_ranks_get_identical_plans(ranks):
    for key in ("plan", "replan"):
        assert ranks[0][key] == ranks[1][key]                 # byte-identical JSON
        meta = json.loads(ranks[0][key])["meta"]
        assert meta["world_size"] == 2 and meta["calibration_batches"] == 4
    assert json.loads(ranks[0]["replan"])["meta"]["nvfp4_fraction"] >= 0.75
    # rank 0 hit the error; rank 1 raised the same one instead of hanging
    assert ranks[0]["error"] == ranks[1]["error"]
    assert ranks[0]["error"].startswith("BudgetError: budget=0.999 cannot be met")
    # Uneven batch counts (4 vs 2): the ranks keep agreeing until both are done; all 6
    # batches count. Mutant ``any()`` -> ``all()`` in ``distributed.agree``: the ranks
    # stop after round 3, 5 batches (an imbalance of 1, as before, could not show it).
    assert ranks[0]["uneven"] == ranks[1]["uneven"]
    assert json.loads(ranks[0]["uneven"])["meta"]["calibration_batches"] == 6


@needs_gloo
def test_an_error_on_one_rank_is_raised_on_every_rank_promptly(ranks):
    """A loss_fn failing on rank 1 only, and a NaN batch on rank 0 only: both ranks raise
    the same error (the failing rank's type and message, prefixed by its rank) right
    after that batch. Before, the other rank waited in the next collective until the
    process-group timeout (60 s in the worker, 30 min by default).

    Mutant: ``stats.collect_stats`` without the per-batch ``agree`` (``agree`` returning
    ``active`` at once): rank 0 waits, then fails after 60 s with a gloo error -> the
    messages differ and the time bound fails.
    """
    assert ranks[0]["stats_error"] == ranks[1]["stats_error"] == \
        "RuntimeError: rank 1: boom in rank 1's loss_fn"
    assert ranks[0]["nan_error"] == ranks[1]["nan_error"]
    assert ranks[0]["nan_error"].startswith(
        "FloatingPointError: rank 0: loss_fn returned a non-finite loss (nan) on "
        "calibration batch 0")
    # Both ranks fail in the same batch, each with its own error: every rank raises the
    # lowest failing rank's. Mutant ``failed[0]`` -> ``failed[-1]``: rank 1's KeyError.
    assert ranks[0]["both_error"] == ranks[1]["both_error"] == \
        "ValueError: rank 0: rank 0's own error"
    for rank in ranks:          # far below the 60 s a waiting rank would take
        assert rank["stats_error_seconds"] < 30 and rank["nan_error_seconds"] < 30, rank
