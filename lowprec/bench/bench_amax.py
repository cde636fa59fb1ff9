"""The amax kernel: max|x| and max|RHT(x^T)| of a bf16 [M, K] tensor in one read.

Bytes counted once: 2 B/element read (the two fp32 results are negligible). "of copy"
divides by a same-run device copy moving the same bytes. Target (H100/H200):
>= 85% of copy.

    python -m lowprec.bench.bench_amax [--backends triton] [--shapes 8192x8192,...] [--reps 50]

A backend other than triton takes part when its module defines ``amax_row_col(x,
rht_signs)`` returning the two amaxes.
"""

import torch

from lowprec.bench import common
from lowprec.bench.bench_quantize_row_col import DEFAULT_SHAPES


def amax_entry(backend):
    if backend == "triton":
        from lowprec.kernels.amax import amax_row_col
        from lowprec.kernels.config import quarter_signs
        return lambda x, signs: amax_row_col(x, quarter_signs(signs, x.device)), None
    module, reason = common.backend_module(backend)
    if module is None:
        return None, reason
    fn = getattr(module, "amax_row_col", None)
    return fn, None if fn else f"backend {backend} has no amax_row_col"


def main():
    args = common.parse_quantize_args("bench_amax", DEFAULT_SHAPES, __doc__.splitlines()[0])
    from lowprec import reference as R
    rows = []
    for backend, fn, (m, k) in common.backend_shapes(args, amax_entry):
        nbytes = 2 * m * k
        sets = common.input_sets(
            lambda: torch.randn(m, k, device=common.DEVICE, dtype=torch.bfloat16), nbytes)
        copy_ms, _ = common.copy_reference(nbytes, reps=args.reps)
        ms = common.median_ms(lambda x: fn(x, R.DEFAULT_SIGN_VECTOR), sets, reps=args.reps)
        rows.append(common.bandwidth_row("amax_row_col", backend, f"{m}x{k}", ms, nbytes,
                                         copy_ms, M=m, K=k))
    common.print_table(rows, [("impl", "backend", "s"), ("M", "M", "d"), ("K", "K", "d"),
                              *common.BANDWIDTH_COLUMNS])
    print("wrote", common.write_results("bench_amax", rows))


if __name__ == "__main__":
    main()
