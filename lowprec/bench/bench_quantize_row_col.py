"""Kernel 1: fused activation / gradient quantize (rowwise 1x16 + RHT-columnwise 1x16).

Modes, per shape [M, K] of bf16 input:
  rne        amaxes given, RNE on both copies (X in the recipe)
  sr         amaxes given, SR on both copies (dY in the recipe)
  amax+rne   the amax kernel, then the quantize kernel: two reads of x

Bytes counted once: 2 B/element read, 0.5625 B/element written per copy, so 3.125
B/element for row + column. "of copy" divides by a same-run device copy moving those
bytes. For amax+rne the kernels move 5.125 B/element (x is read twice), so the best it
can reach is 3.125 / 5.125 = 61% of copy ("of bound" is the ratio to that).

Targets (H100/H200): rne >= 85% of copy, sr >= 80%.

    python -m lowprec.bench.bench_quantize_row_col [--backends triton] [--shapes 8192x8192,...] [--reps 50]

A backend other than triton takes part when its module defines
``quantize_row_col`` with the signature of lowprec.kernels.backend's.
"""

import torch

from lowprec.bench import common

FUSED_BOUND = 3.125 / 5.125
DEFAULT_SHAPES = ["8192x8192", "8192x4096", "8192x6144", "8192x10240", "8192x14336",
                  "8192x28672", "8192x57344"]


def fused_entry(backend):
    if backend == "triton":
        from lowprec.kernels.backend import quantize_row_col
        return quantize_row_col, None
    module, reason = common.backend_module(backend)
    if module is None:
        return None, reason
    fn = getattr(module, "quantize_row_col", None)
    return fn, None if fn else f"backend {backend} has no quantize_row_col"


def measure(fn, backend, m, k, reps):
    from lowprec import reference as R
    signs = R.DEFAULT_SIGN_VECTOR
    m_pad = -(-m // 16) * 16
    nbytes = 2 * m * k + (m * k + k * m_pad) * 9 // 16
    sets = common.input_sets(lambda: torch.randn(m, k, device=common.DEVICE, dtype=torch.bfloat16),
                             2 * m * k)
    amaxes = [fn(x, rht_signs=signs) for x in sets]           # measured once, then given
    given = {id(x): (row[2], col[2]) for x, (row, col) in zip(sets, amaxes)}
    copy_ms, _ = common.copy_reference(nbytes, reps=reps)
    modes = {
        "rne": lambda x: fn(x, rht_signs=signs, row_amax=given[id(x)][0],
                            col_amax=given[id(x)][1]),
        "sr": lambda x: fn(x, rht_signs=signs, row_stochastic=True, col_stochastic=True,
                           seed=1, row_offset=0, col_offset=-(-m * k // 4),
                           row_amax=given[id(x)][0], col_amax=given[id(x)][1]),
        "amax+rne": lambda x: fn(x, rht_signs=signs),
    }
    rows = []
    for mode, run in modes.items():
        ms = common.median_ms(run, sets, reps=reps)
        rows.append(common.bandwidth_row(
            f"quantize_row_col {mode}", backend, f"{m}x{k}", ms, nbytes, copy_ms, M=m, K=k,
            mode=mode, of_bound=copy_ms / ms / FUSED_BOUND if mode == "amax+rne" else None))
    return rows


def main():
    args = common.parse_quantize_args("bench_quantize_row_col", DEFAULT_SHAPES,
                                      __doc__.splitlines()[0])
    rows = []
    for backend, fn, (m, k) in common.backend_shapes(args, fused_entry):
        rows.extend(measure(fn, backend, m, k, args.reps))
    common.print_table(rows, [("impl", "backend", "s"), ("M", "M", "d"), ("K", "K", "d"),
                              ("mode", "mode", "s"), *common.BANDWIDTH_COLUMNS,
                              ("of_bound", "of 61% bound", ".1%")])
    print("wrote", common.write_results("bench_quantize_row_col", rows))


if __name__ == "__main__":
    main()
