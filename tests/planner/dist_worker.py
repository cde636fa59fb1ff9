"""Worker for test_distributed.py: run as a script, spawns 2 gloo ranks on localhost.

Each rank builds the same model, calibrates on its own batches, and writes what it got:
the plan of ``make_plan`` and of a ``Replanner`` round as JSON, the error of an
unreachable budget, of a loss_fn failing on one rank and of a NaN batch on one rank (with
how long each took), the error when both ranks fail in the same batch with different
errors, and the plan of uneven calibration (4 batches on rank 0, 2 on rank 1).
The test compares the files. (A script rather than a function of the test module,
because spawned children must import the function by name.)
"""

import datetime
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32, 32)
        self.fc2 = nn.Linear(32, 32)
        self.head = nn.Linear(32, 10)          # N=10: forced to BF16

    def forward(self, x, y):
        return F.cross_entropy(self.head(F.gelu(self.fc2(F.gelu(self.fc1(x))))), y)


def failing_loss(rank):
    """A loss_fn that fails on rank 1's second batch (rank 0 has nothing to fail on)."""
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        if rank == 1 and len(calls) > 2:              # two passes per batch
            raise RuntimeError("boom in rank 1's loss_fn")
        return model(*batch)
    return loss_fn


def both_failing_loss(rank):
    """A loss_fn failing on both ranks' first batch, with a different error on each."""
    def loss_fn(model, batch):
        if rank == 0:
            raise ValueError("rank 0's own error")
        raise KeyError("rank 1's own error")
    return loss_fn


def errors_of(rank, batches, make_plan):
    """The error each failing call raised on this rank, as 'Type: message', and its time."""
    out = {}
    for case in ("stats_error", "nan_error", "both_error"):
        start = time.monotonic()
        calibration = batches
        loss_fn = failing_loss(rank)
        if case == "nan_error":                     # a NaN batch on rank 0 only
            calibration = [(torch.full_like(b[0], float("nan")) if rank == 0 else b[0], b[1])
                           for b in batches]
            loss_fn = lambda m, b: m(*b)
        if case == "both_error":
            loss_fn = both_failing_loss(rank)
        try:
            make_plan(MLP(), budget=0.5, calibration=calibration, loss_fn=loss_fn,
                      progress=False)
            out[case] = None
        except Exception as err:
            out[case] = f"{type(err).__name__}: {err}"
        out[case + "_seconds"] = time.monotonic() - start
    return out


def run(rank, world, outdir):
    # A file rendezvous: no TCP port that another process could take between choosing
    # and binding it. A rank left waiting in a collective fails after 60 s instead of
    # the default 30 min.
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(outdir, 'store')}",
                            rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        import lowprec
        from lowprec.planner import BudgetError, Replanner, make_plan
        torch.manual_seed(0)
        model = MLP()
        gen = torch.Generator().manual_seed(100 + rank)           # different data per rank
        batches = [(torch.randn(32, 32, generator=gen),
                    torch.randint(0, 10, (32,), generator=gen))
                   for _ in range(2)]
        loss_fn = lambda m, b: m(*b)
        out = {}
        plan = make_plan(model, budget=0.5, calibration=batches, loss_fn=loss_fn,
                         progress=False)
        out["plan"] = plan.to_json()
        model = lowprec.convert(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss_fn(model, batches[0]).backward()
        opt.step()
        replanner = Replanner(model, every=1, budget=0.75, calibration=batches,
                              optimizer=opt, loss_fn=loss_fn, progress=False)
        out["replan"] = replanner.step().to_json()
        try:
            make_plan(model, budget=0.999, calibration=batches, loss_fn=loss_fn,
                      progress=False)
            out["error"] = None
        except BudgetError as err:
            out["error"] = f"{type(err).__name__}: {err}"
        out.update(errors_of(rank, batches, make_plan))
        # Uneven calibration: rank 0 has 4 batches, rank 1 has 2. An imbalance of 2: a
        # rank stopping when any other one runs out would lose rank 0's 4th batch.
        uneven = batches + batches if rank == 0 else batches
        out["uneven"] = make_plan(MLP(), budget=0.5, calibration=uneven, loss_fn=loss_fn,
                                  progress=False).to_json()
        with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
        dist.barrier()             # no rank tears down while another still communicates
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    outdir = sys.argv[1]
    mp.spawn(run, args=(2, outdir), nprocs=2, join=True)
