"""Kernel 2: 16x16 weight quantization, rowwise and columnwise copies from one read.

Bytes counted once, amax given: 2 B/element read, 0.5625 B/element written per copy
(3.125 B/element). "of copy" divides by a same-run device copy moving those bytes.
Target (H100/H200): >= 85% of copy.

    python -m lowprec.bench.bench_quantize_2d [--backends triton] [--shapes 4096x4096,...] [--reps 50]

A backend other than triton takes part when its module defines ``quantize_weight_2d``
with the signature of lowprec.kernels.backend's.
"""

import torch

from lowprec.bench import common


def weight_entry(backend):
    if backend == "triton":
        from lowprec.kernels.backend import quantize_weight_2d
        return quantize_weight_2d, None
    module, reason = common.backend_module(backend)
    if module is None:
        return None, reason
    fn = getattr(module, "quantize_weight_2d", None)
    return fn, None if fn else f"backend {backend} has no quantize_weight_2d"


def default_shapes():
    shapes = ["8192x8192"]
    for linears in common.LLAMA3_LINEARS.values():
        shapes += [f"{n}x{k}" for _, n, k in linears]
    return list(dict.fromkeys(shapes))


def main():
    args = common.parse_quantize_args("bench_quantize_2d", default_shapes(),
                                      __doc__.splitlines()[0])
    rows = []
    for backend, fn, (n, k) in common.backend_shapes(args, weight_entry):
        nbytes = 2 * n * k + 2 * (n * k * 9 // 16)
        sets = common.input_sets(
            lambda: torch.randn(n, k, device=common.DEVICE, dtype=torch.bfloat16) * 0.02,
            2 * n * k)
        amax = {id(w): w.abs().max().float() for w in sets}
        copy_ms, _ = common.copy_reference(nbytes, reps=args.reps)
        ms = common.median_ms(lambda w: fn(w, amax=amax[id(w)]), sets, reps=args.reps)
        rows.append(common.bandwidth_row("quantize_weight_2d", backend, f"{n}x{k}", ms,
                                         nbytes, copy_ms, N=n, K=k))
    common.print_table(rows, [("impl", "backend", "s"), ("N", "N", "d"), ("K", "K", "d"),
                              *common.BANDWIDTH_COLUMNS])
    print("wrote", common.write_results("bench_quantize_2d", rows))


if __name__ == "__main__":
    main()
