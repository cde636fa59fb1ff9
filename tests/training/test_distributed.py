"""DDP and FSDP2 (fully_shard), 2 processes on gloo, against one process.

What a data-parallel step computes: each rank runs the forward and backward of its
half of the global batch, then the gradients are averaged. The one-process equivalent
is therefore gradient accumulation over the ranks' halves, each half taking its SR keys
as that rank does (its run seed and its own SR counts), then a division by the world
size. With NVFP4 this
must hold bit for bit:

* the quantizations see the same tensors (each rank's half, its own global amax);
* the average: DDP and FSDP2 divide each rank's gradient by 2 and sum,
  g0/2 + g1/2, which equals (g0 + g1)/2 exactly (halving is exact in binary FP).

A single process fed the whole global batch at once is a different NVFP4 computation
(one global amax over both halves, other SR words): a rounding difference of the size
of NVFP4's own error. Bounds against it, per step, on the mean of the ranks' losses:

* high precision: 1e-5 relative (FP32 sums in another order over a few steps;
  measured 8e-8);
* NVFP4: 1% relative, the size of the NVFP4-vs-BF16 loss gap (test_gpt_loss; measured
  here at most 0.21%). Wiring errors are caught bit for bit by the first test.
"""

import multiprocessing
import os
import tempfile
import time

import pytest
import torch

import lowprec
import torch.multiprocessing as mp

from . import dist_worker as W
from .tinygpt import loss_fn


def one_process_accumulating(recipe):
    model = W.build(recipe)
    opt = torch.optim.AdamW(model.parameters(), lr=W.LR)
    # Each rank's RNG state (its run seed) and SR counts, swapped in for its half.
    streams, counts = [], []
    for rank in range(W.WORLD):
        torch.manual_seed(W.rank_seed(rank))
        streams.append(torch.get_rng_state())
        counts.append(lowprec.sr_state_dict(model))
    losses = [[] for _ in range(W.WORLD)]
    for tokens in W.batches():
        opt.zero_grad()
        for rank, half in enumerate(tokens.chunk(W.WORLD)):
            torch.set_rng_state(streams[rank])
            lowprec.load_sr_state_dict(model, counts[rank])
            loss = loss_fn(model, half)
            loss.backward()
            streams[rank] = torch.get_rng_state()
            counts[rank] = lowprec.sr_state_dict(model)
            losses[rank].append(loss.detach())
        for p in model.parameters():
            p.grad.div_(W.WORLD)
        opt.step()
    return losses, model.state_dict()


def one_process_global_batch(recipe):
    model = W.build(recipe)
    opt = torch.optim.AdamW(model.parameters(), lr=W.LR)
    losses = []
    for tokens in W.batches():
        loss = loss_fn(model, tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses


# Wall-clock limit of one 2-rank run (both recipes; ~10-30 s on a loaded 2-core machine):
# a rank that hangs (a collective, or teardown at exit) fails the test instead of
# running into CI's time limit.
RUN_TIMEOUT_S = 300


def spawn_with_timeout(fn, args, nprocs, timeout):
    """``mp.spawn`` with a deadline: on timeout every rank is terminated (then killed)
    and TimeoutError names the ranks that were still running. A rank's exception is
    raised as by ``mp.spawn`` (the others are terminated by torch)."""
    # The spawned interpreters import ``fn`` by its module name, from the directory
    # above this test package, with this process's sys.path (read when they start).
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(tests_dir)
        context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False,
                                     start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            alive = [rank for rank, p in enumerate(context.processes) if p.is_alive()]
            for p in context.processes:
                p.terminate()
            for p in context.processes:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
            raise TimeoutError(f"ranks {alive} still running after {timeout} s; terminated")


@pytest.fixture(scope="module", params=["ddp", "fsdp2"])
def distributed_run(request):
    with tempfile.TemporaryDirectory() as out_dir:
        spawn_with_timeout(W.worker, (f"{out_dir}/init", request.param, out_dir),
                           W.WORLD, RUN_TIMEOUT_S)
        yield [torch.load(f"{out_dir}/rank{r}.pt") for r in range(W.WORLD)]


def test_a_hung_rank_is_terminated_and_named():
    """The deadline works: a rank that never returns is killed and named, promptly.

    30 s leaves rank 0 time to start (a spawned interpreter imports torch: a few seconds
    on a loaded machine) and return. Mutants: no terminate/kill on timeout -> a rank is
    still alive afterwards; no deadline (``join()`` without timeout) -> the elapsed-time
    bound fails."""
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"ranks \[1\] still running after 30 s"):
        spawn_with_timeout(W.sleep_on_rank, (1, 600.0), 2, 30)
    assert time.monotonic() - start < 90
    assert not multiprocessing.active_children()


def test_nvfp4_equals_one_process_accumulating_the_ranks_halves(distributed_run):
    losses, state = one_process_accumulating(W.RECIPES["nvfp4"])
    for rank, result in enumerate(distributed_run):
        got = result["nvfp4"]
        assert all(torch.equal(a, b) for a, b in zip(got["losses"], losses[rank]))
        for key, value in state.items():
            assert torch.equal(got["state"][key], value), key


@pytest.mark.parametrize("recipe, bound", [("high", 1e-5), ("nvfp4", 1e-2)])
def test_losses_match_one_process_with_the_global_batch(distributed_run, recipe, bound):
    single = one_process_global_batch(W.RECIPES[recipe])
    per_rank = [result[recipe]["losses"] for result in distributed_run]
    for step, want in enumerate(single):
        got = sum(losses[step] for losses in per_rank) / W.WORLD   # equal-size halves
        assert abs(got - want) <= bound * want, (step, got.item(), want.item())
