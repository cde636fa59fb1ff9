"""CPU training step: a lowprec-converted small GPT against the same model plain.

One thread, the ``cpu`` backend (``backend="auto"`` on CPU tensors: the C++ kernels of
csrc/ built for the CPU, FP32 GEMMs). Both models are the demo GPT
(``lowprec.demo.model``) with the same weights; the converted one is
``lowprec.convert(model)`` (the default plan: the NVFP4 recipe on the block linears, the
last blocks BF16 as the plan says). A step is forward, backward and AdamW on one batch.
The two models' steps alternate (plain, converted, plain, ...), so a machine whose speed
drifts (a shared VM) slows both alike. Reported: the median CPU time of the process per
step (``time.process_time``: with one thread it is the step's compute, and other jobs on
a shared machine do not inflate it) over ``--steps`` steps after ``--warmup``, the median
wall time beside it, per model, and the median over the step pairs of the ratio
converted / plain of their CPU times.

Target: converted step <= 2x the plain one.

    python -m lowprec.bench.bench_train_step_cpu [--layers 6 --d-model 128 --batch 8 --seq 128]
"""

import argparse
import statistics
import time

import torch

import lowprec
from lowprec import dispatch
from lowprec.bench import common
from lowprec.demo.model import GPT, GPTConfig


def training_step(model, batch):
    """One forward, backward and AdamW update of ``model`` on ``batch``."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        model(*batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def interleaved_times(steps_by_name, steps, warmup):
    """{name: ([CPU ms], [wall ms])} of ``steps`` rounds after ``warmup``, each round one
    step of every model in turn."""
    times = {name: ([], []) for name in steps_by_name}
    for i in range(warmup + steps):
        for name, step in steps_by_name.items():
            start = time.perf_counter()
            cpu_ms, _ = common.timed_ms(step, cuda=False, clock=time.process_time)
            if i >= warmup:
                times[name][0].append(cpu_ms)
                times[name][1].append((time.perf_counter() - start) * 1e3)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = GPTConfig(d_model=args.d_model, n_layer=args.layers, n_head=args.heads,
                    seq_len=args.seq)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (args.batch, args.seq + 1), generator=gen)
    batch = (tokens[:, :-1], tokens[:, 1:])

    torch.manual_seed(0)
    plain = GPT(cfg)
    torch.manual_seed(0)
    converted = lowprec.convert(GPT(cfg))
    print(f"model: {args.layers} blocks, d_model {args.d_model}, batch {args.batch} x "
          f"{args.seq} tokens; torch threads {torch.get_num_threads()}; backend for "
          f"quantize_row_col on CPU: {dispatch.table()[1]['quantize_row_col']}")
    times = interleaved_times({"plain": training_step(plain, batch),
                               "converted": training_step(converted, batch)},
                              args.steps, args.warmup)
    (plain_cpus, plain_walls), (conv_cpus, conv_walls) = times["plain"], times["converted"]
    plain_cpu, plain_wall = statistics.median(plain_cpus), statistics.median(plain_walls)
    conv_cpu, conv_wall = statistics.median(conv_cpus), statistics.median(conv_walls)
    ratio = statistics.median(c / p for c, p in zip(conv_cpus, plain_cpus))
    print(f"medians of {args.steps} steps    CPU ms   wall ms")
    print(f"plain                   {plain_cpu:8.1f}  {plain_wall:8.1f}")
    print(f"converted               {conv_cpu:8.1f}  {conv_wall:8.1f}")
    print(f"ratio converted/plain   {ratio:8.2f}x (CPU time, median over the step pairs; "
          f"target <= 2x)")
    shape = f"{args.layers} blocks, d_model {args.d_model}, batch {args.batch} x {args.seq}"
    # time_ms is the process's CPU time per step (one thread), wall_ms the wall clock.
    rows = [common.row(name, cpu_ms, impl="cpu", shape=shape, baseline="plain",
                       of_baseline=of_plain, wall_ms=wall_ms, clock="process_time")
            for name, cpu_ms, wall_ms, of_plain in (("plain", plain_cpu, plain_wall, 1.0),
                                                    ("converted", conv_cpu, conv_wall,
                                                     1.0 / ratio))]
    print("wrote", common.write_results("bench_train_step_cpu", rows,
                                        extra={"args": vars(args)}))


if __name__ == "__main__":
    main()
