"""Quantize bandwidth: the CUDA kernels (csrc/quantize.cu) beside the Triton ones and a
device copy of the same bytes, in one run on one GPU.

Measured, per shape (bf16 input, amaxes given, so each op is one pass over its input):
  rowcol_rne   fused rowwise 1x16 + columnwise RHT 1x16 copies, RNE (X in the recipe)
  rowcol_sr    the same with SR on both copies (dY in the recipe)
  weight_2d    16x16 rowwise + transposed copies of a weight
  rowwise      plain 1x16 rowwise RNE

Bytes are the compulsory ones, each counted once: the input read once, every output
written once (codes 1/2 byte and scales 1/16 byte per element and copy; amaxes ignored).
TB/s = bytes / median time over CUDA-event-timed runs; "of copy" is the ratio to a
same-run `torch` device-to-device copy moving the same number of bytes (half read, half
written). Clocks are never locked or changed.

Targets (H100/H200): >= 90% of copy for rowcol_rne and weight_2d, >= 85% for
rowcol_sr; the CUDA kernels should beat Triton's.

Usage: python -m lowprec.bench.bench_quantize_cuda [--shapes 8192x8192,16384x4096] [--iters 50]
Writes bench_quantize_cuda_<gpu>_<time>.json into common.RESULTS (or --out). Without a GPU it
says so and writes nothing (a figure that was not measured is never written down).
"""

import argparse
import sys

import torch

from lowprec.bench import common
from lowprec import _C, device
from lowprec import reference as R

SIGNS = R.DEFAULT_SIGN_VECTOR


def timed(fn, iters):
    """Median milliseconds of ``fn()`` over ``iters`` CUDA-event-timed runs."""
    return common.median_ms(lambda _: fn(), [None], warmup=5, reps=iters)


def nvfp4_bytes(rows, cols):
    """Codes and scales of one NVFP4 copy of a [rows, cols] tensor."""
    return rows * cols // 2 + rows * cols // 16


def cases(m, k):
    """(name, input shape, compulsory bytes, kwargs builder) of each measured op."""
    m_pad = (m + 15) // 16 * 16
    read = m * k * 2
    rowcol = read + nvfp4_bytes(m, k) + nvfp4_bytes(k, m_pad)
    return [
        ("rowcol_rne", rowcol, dict(kind="rowcol", sr=False)),
        ("rowcol_sr", rowcol, dict(kind="rowcol", sr=True)),
        ("weight_2d", read + 2 * nvfp4_bytes(m, k), dict(kind="2d")),
        ("rowwise", read + nvfp4_bytes(m, k), dict(kind="rowwise")),
    ]


def op_for(backend, x, spec, amaxes):
    row_amax, col_amax = amaxes
    if spec["kind"] == "rowcol":
        return lambda: backend.quantize_row_col(
            x, rht_signs=SIGNS, row_stochastic=spec["sr"], col_stochastic=spec["sr"], seed=1,
            row_offset=0, col_offset=-(-x.numel() // 4), row_amax=row_amax, col_amax=col_amax)
    if spec["kind"] == "2d":
        return lambda: backend.quantize_weight_2d(x, amax=row_amax)
    return lambda: backend.quantize_nvfp4(x, amax=row_amax)


def given_amaxes(x):
    """The rowwise amax of x and the columnwise one of RHT(padded x^T), computed once with
    the reference outside the timed region (the recipe passes amaxes it already has)."""
    m, k = x.shape
    xt = torch.zeros(k, (m + 15) // 16 * 16, dtype=x.dtype, device=x.device)
    xt[:, :m] = x.T
    return R.tensor_amax(x), R.tensor_amax(R.rht(xt, SIGNS))


def backends():
    found = {}
    reason = _C.cuda_reason()
    if reason is None:
        from lowprec.backends import cuda
        found["cuda"] = cuda
    else:
        print(f"cuda backend unavailable: {reason}")
    try:
        from lowprec import backends as registry
        why = registry.reason_unavailable("triton", "cuda")
        if why is None:
            from lowprec.kernels import backend as triton_backend
            found["triton"] = triton_backend
        else:
            print(f"triton backend unavailable: {why}")
    except Exception as err:  # a broken Triton install must not stop the CUDA figures
        print(f"triton backend unavailable: {type(err).__name__}: {err}")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="8192x8192,16384x4096,4096x16384")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing measured, nothing written")
        return 0
    impls = backends()
    print(device.format_facts(device.facts()))
    rows = []
    for shape in args.shapes.split(","):
        m, k = (int(v) for v in shape.split("x"))
        x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
        amaxes = given_amaxes(x)
        for name, nbytes, spec in cases(m, k):
            src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
            dst = torch.empty_like(src)
            copy_ms = timed(lambda: dst.copy_(src), args.iters)
            for impl_name, impl in impls.items():
                ms = timed(op_for(impl, x, spec, amaxes), args.iters)
                rows.append(common.bandwidth_row(name, impl_name, f"{m}x{k}", ms, nbytes,
                                                 copy_ms))
    common.print_table(rows, [("name", "op", "s"), ("impl", "backend", "s"),
                              ("shape", "shape", "s"), *common.BANDWIDTH_COLUMNS,
                              ("copy_tbps", "copy TB/s", ".2f")])
    print("wrote", common.write_results("bench_quantize_cuda", rows,
                                        extra={"iters": args.iters}, path=args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
