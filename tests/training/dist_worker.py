"""Worker processes for test_distributed.py (spawned; gloo on CPU)."""

import os
import time

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from lowprec.conversion import convert
from lowprec.recipe import Recipe

from .tinygpt import TinyGPT, loss_fn, markov_batches

WORLD = 2
STEPS, GLOBAL_BATCH, SEQ, VOCAB, LR = 3, 8, 16, 16, 1e-2
RECIPES = {"nvfp4": Recipe(), "high": Recipe.uniform("bf16")}


def rank_seed(rank):
    """Each rank draws its own SR keys (independent rounding across data shards)."""
    return 100 + rank


def build(recipe):
    torch.manual_seed(0)
    model = TinyGPT(vocab=VOCAB, d_model=32, n_blocks=2, n_heads=2, seq_len=SEQ)
    return convert(model, recipe=recipe)


def batches():
    return markov_batches(STEPS, GLOBAL_BATCH, SEQ, vocab=VOCAB)


def sleep_on_rank(rank, sleeper, seconds):
    """A stand-in worker whose rank ``sleeper`` hangs (for the spawn timeout's test)."""
    if rank == sleeper:
        time.sleep(seconds)


def worker(rank, init_file, wrapper, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        _train_and_save(rank, wrapper, out_dir)
        dist.barrier()             # no rank tears down while another still communicates
    finally:
        dist.destroy_process_group()


def _train_and_save(rank, wrapper, out_dir):
    results = {}
    for name, recipe in RECIPES.items():
        model = build(recipe)
        if wrapper == "ddp":
            model = DistributedDataParallel(model)
        else:
            for block in model.blocks:
                fully_shard(block)
            fully_shard(model)
        opt = torch.optim.AdamW(model.parameters(), lr=LR)
        torch.manual_seed(rank_seed(rank))
        losses = []
        for tokens in batches():
            loss = loss_fn(model, tokens.chunk(WORLD)[rank])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        if wrapper == "ddp":
            state = model.module.state_dict()
        else:
            state = {k: v.full_tensor() for k, v in model.state_dict().items()}
        results[name] = {"losses": losses, "state": state}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
