"""Per-step time of ``lowprec.grouped_linear`` vs a loop of per-expert Linears.

One step is the forward and backward of one expert projection over routed rows: ``T``
tokens, each sent to ``top_k`` of ``E`` experts by a fixed random routing, weight
``[E, N, K]``. Timed, each with the same rows:

* ``grouped``          ``grouped_linear(x_sorted, weight, counts, recipe)``;
* ``loop-lowprec``     a Python loop of E ``lowprec.Linear`` modules (same recipe);
* ``loop-nn.Linear``   a loop of E ``nn.Linear`` (no quantization: the baseline cost of
                       the GEMMs themselves in the model's dtype).

Reported: the median over ``--steps`` steps after ``--warmup`` (the three run in turns),
on the device given (CPU by default; the CPU path emulates NVFP4 with exact
dequantization, so its times say nothing about a GPU).

Usage: python -m lowprec.bench.bench_grouped_linear [--experts 8 --tokens 256 --top-k 2
       --k 256 --n 512 --recipe nvfp4 --steps 10 --warmup 2]
"""

import argparse
import statistics

import torch
from torch import nn


from lowprec.bench import common
from lowprec.grouped import grouped_linear
from lowprec.linear_layer import Linear
from lowprec.moe import route
from lowprec.recipe import Recipe


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--recipe", choices=("nvfp4", "fp8", "bf16"), default="nvfp4")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="record path (default: a new file in common.RESULTS)")
    return parser.parse_args(argv)


def time_steps(steps_by_label, steps, warmup, device):
    """Median milliseconds per step of each callable, run in turns (one step of each per
    round) so that a change in machine load hits them alike."""
    times = {label: [] for label in steps_by_label}
    for i in range(warmup + steps):
        for label, step in steps_by_label.items():
            ms, _ = common.timed_ms(step, cuda=device != "cpu")
            if i >= warmup:
                times[label].append(ms)
    return {label: statistics.median(t) for label, t in times.items()}


def main(argv=None):
    args = parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    recipe = Recipe.uniform(args.recipe)
    index = torch.stack([torch.randperm(args.experts, generator=gen)[:args.top_k]
                         for _ in range(args.tokens)])
    token, _, counts = route(index, args.experts)
    x = torch.randn(args.tokens, args.k, generator=gen)[token].to(args.device)
    weight = (torch.randn(args.experts, args.n, args.k, generator=gen) / args.k ** 0.5)
    weight = nn.Parameter(weight.to(args.device))
    out_grad = torch.randn(x.shape[0], args.n, generator=gen).to(args.device)
    counts = counts.to(args.device)
    sizes = counts.tolist()

    def grouped():
        xs = x.detach().requires_grad_()
        grouped_linear(xs, weight, counts, recipe=recipe).backward(out_grad)

    def loop(layers):
        def step():
            xs = x.detach().requires_grad_()
            torch.cat([layer(rows) for layer, rows in zip(layers, xs.split(sizes))]
                      ).backward(out_grad)
        return step

    lowprec_layers, plain_layers = [], []
    for e in range(args.experts):
        plain = nn.Linear(args.k, args.n, bias=False, device=args.device)
        plain.weight = nn.Parameter(weight.detach()[e].clone())
        plain_layers.append(plain)
        lowprec_layers.append(Linear.from_linear(plain, recipe))

    print(f"E={args.experts} tokens={args.tokens} top_k={args.top_k} K={args.k} "
          f"N={args.n} recipe={recipe} device={args.device} rows per expert={sizes}")
    torch.manual_seed(0)
    medians = time_steps({"grouped": grouped, "loop-lowprec": loop(lowprec_layers),
                          "loop-nn.Linear": loop(plain_layers)},
                         args.steps, args.warmup, args.device)
    for label, ms in medians.items():
        print(f"{label:15s} {ms:9.2f} ms/step (median of {args.steps})")
    shape = f"E={args.experts} tokens={args.tokens} top_k={args.top_k} K={args.k} N={args.n}"
    rows = [common.row(label, ms, impl=args.device, shape=shape, baseline="loop-nn.Linear",
                       of_baseline=medians["loop-nn.Linear"] / ms, recipe=args.recipe)
            for label, ms in medians.items()]
    print("wrote", common.write_results("bench_grouped_linear", rows,
                                        extra={"args": vars(args)}, path=args.out))


if __name__ == "__main__":
    main()
