"""Host cost of one Linear forward+backward: a converted layer against ``nn.Linear``.

At a tiny shape (default 16 tokens x 16 -> 16) the kernels take next to nothing, so the
time is what the host spends per layer: Python, argument handling, autograd, operator
dispatch. On a GPU that cost is what leaves the device idle. Run on the ``cpu`` backend,
one thread, under bf16 autocast, as a training step would be.

Reported per mode (``nn.Linear``, and ``lowprec.Linear`` with the NVFP4 recipe and with
FP8): the median wall time of forward+backward over ``--reps`` runs (after a warm-up;
the modes take turns call by call),
its ratio to ``nn.Linear``, and the operator calls one forward+backward makes
(``torch.profiler`` events, nested ones included) with their ratio.

Targets (issue 20): time and operator calls <= 3x ``nn.Linear`` for nvfp4 and fp8.

    python -m lowprec.bench.bench_linear_host [--m 16 --k 16 --n 16 --reps 2000]
"""

import argparse
import statistics
import time

import torch
from torch import nn

import lowprec


def make_layers(k, n):
    torch.manual_seed(0)
    plain = nn.Linear(k, n)
    layers = {"nn.Linear": plain}
    for mode, recipe in (("nvfp4", lowprec.Recipe()), ("fp8", lowprec.Recipe.uniform("fp8"))):
        layer = lowprec.Linear(k, n, recipe=recipe)
        layer.load_state_dict(plain.state_dict())
        layers[mode] = layer
    return layers


def step(layer, x, grad):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.backward(grad)


def host_us(layers, x, grad, reps, warmup=50):
    """``{mode: median microseconds of one forward+backward}``. The modes take turns, one
    call each, so that a slow spell of a shared machine hits them all alike."""
    times = {mode: [] for mode in layers}
    for i in range(warmup + reps):
        for mode, layer in layers.items():
            start = time.perf_counter()
            step(layer, x, grad)
            if i >= warmup:
                times[mode].append((time.perf_counter() - start) * 1e6)
    return {mode: statistics.median(t) for mode, t in times.items()}


def operator_calls(layer, x, grad):
    """Operator calls (profiler events, nested ones included) of one forward+backward."""
    step(layer, x, grad)               # the first call may do one-time work
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step(layer, x, grad)
    return len(prof.events())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--reps", type=int, default=2000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x = torch.randn(args.m, args.k, requires_grad=True)
    grad = torch.ones(args.m, args.n, dtype=torch.bfloat16)     # dL/dY, as autocast's Y
    layers = make_layers(args.k, args.n)
    medians = host_us(layers, x, grad, args.reps)
    results = {mode: (medians[mode], operator_calls(layer, x, grad))
               for mode, layer in layers.items()}
    base_us, base_calls = results["nn.Linear"]
    print(f"Linear forward+backward, x [{args.m}, {args.k}] -> {args.n}, bf16 autocast, "
          f"cpu backend ({lowprec.available('cpu')=}), 1 thread, median of {args.reps}:")
    print(f"  {'mode':<10} {'us':>8} {'x nn.Linear':>12} {'op calls':>9} {'x nn.Linear':>12}")
    for mode, (us, calls) in results.items():
        print(f"  {mode:<10} {us:8.1f} {us / base_us:12.2f} {calls:9d} "
              f"{calls / base_calls:12.2f}")
    return results


if __name__ == "__main__":
    main()
