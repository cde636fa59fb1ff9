"""NVFP4 GEMM on Hopper: the candidates side by side, against a same-run bf16 torch.mm.

Candidates (kernels/nvfp4_gemm.py):
  fused           (a) Triton GEMM reading codes + scales, dequantized in registers
  dequant_mm      (b) dequantize to bf16, torch.mm with an FP32 result, fused epilogue
  dequant_triton  (c) dequantize to fp16, Triton GEMM with alpha and bias in its epilogue
Other backends take part through the registry (``--backends triton,cuda``).
The Hopper emulation's GEMM on the quantizers' bf16 values (what the training layer runs,
``lowprec.backends.cuda.VALUES_GEMMS``) is timed too, both ways:
  values mm_epilogue  torch.mm with an FP32 result, then the epilogue launch (the default)
  values cublaslt     one cuBLASLt call reading alpha from device memory (the extension's
                      nvfp4_gemm_values; skipped, with the reason, where it is not built)

Reported per shape: ms, TFLOP/s, the ratio to bf16 ``torch.mm`` (target: best
candidate >= 85% at 8192^3 and at the Llama-3 8B/70B linear shapes with M = 8192), and
the scratch memory each candidate allocates. ``--configs`` also times a few tile
configurations of the Triton kernel. The last lines print a DISPATCH table to paste into
kernels/nvfp4_gemm.py.

    python -m lowprec.bench.bench_nvfp4_gemm [--backends triton] [--shapes 8192x8192x8192,...]
"""

import argparse

import torch

from lowprec.bench import common

CONFIGS = [  # (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages)
    (128, 128, 128, 8, 8, 3), (128, 256, 64, 8, 8, 3), (128, 256, 128, 8, 8, 2),
    (256, 128, 64, 8, 8, 3), (128, 128, 64, 8, 4, 4)]


def default_shapes():
    shapes = ["8192x8192x8192"]
    for linears in common.LLAMA3_LINEARS.values():
        shapes += [f"{common.TOKENS}x{n}x{k}" for _, n, k in linears]
    return list(dict.fromkeys(shapes))


def scratch_bytes(candidate, m, n, k):
    return {"fused": 0, "dequant_mm": 2 * (m + n) * k + 4 * m * n,
            "dequant_triton": 2 * (m + n) * k}.get(candidate)


def operands(m, n, k):
    from lowprec.kernels.backend import quantize_nvfp4
    a = quantize_nvfp4(torch.randn(m, k, device=common.DEVICE, dtype=torch.bfloat16))
    b = quantize_nvfp4(torch.randn(n, k, device=common.DEVICE, dtype=torch.bfloat16) * 0.02)
    return (*a, *b)


def entries(backend):
    """name -> fn(a_data, a_scale, a_amax, b_data, b_scale, b_amax, out_dtype=...)."""
    if backend == "triton":
        from lowprec.kernels.nvfp4_gemm import CANDIDATES
        return dict(CANDIDATES), None
    module, reason = common.backend_module(backend)
    if module is None or not hasattr(module, "nvfp4_gemm"):
        return None, reason or f"backend {backend} has no nvfp4_gemm"
    return {backend: module.nvfp4_gemm}, None


def values_entries():
    """name -> fn(a_values, a_amax, b_values, b_amax, out_dtype=...), and why cuBLASLt's
    is missing (or None)."""
    from lowprec import _C
    from lowprec.backends import cuda
    from lowprec.kernels.nvfp4_gemm import gemm_values
    fns = {"values mm_epilogue": gemm_values}
    reason = _C.cublaslt_reason()
    if reason is None:
        fns["values cublaslt"] = cuda.gemm_values_cublaslt
    return fns, reason


def as_values(ops):
    """Packed operands -> the bf16 values the quantizers write in values mode."""
    from lowprec.kernels.nvfp4_gemm import dequantize_values
    a_data, a_scale, a_amax, b_data, b_scale, b_amax = ops
    return (dequantize_values(a_data, a_scale), a_amax, dequantize_values(b_data, b_scale),
            b_amax)


def fp8_ms(m, n, k, reps):
    """Median ms of lowprec's FP8 GEMM (torch._scaled_mm on sm_89+) on row-quantized operands."""
    from lowprec.kernels.fp8 import fp8_gemm, quantize_fp8

    def make():
        a = quantize_fp8(torch.randn(m, k, device=common.DEVICE, dtype=torch.bfloat16))
        b = quantize_fp8(torch.randn(n, k, device=common.DEVICE, dtype=torch.bfloat16))
        return (*a, *b)

    sets = common.input_sets(make, (m + n) * k)
    return common.median_ms(lambda ops: fp8_gemm(*ops, out_dtype=torch.bfloat16), sets,
                            reps=reps)


def planner_records(rows, best, fp8):
    """The per-precision GEMM throughputs the planner's Hopper cost model reads
    (lowprec/planner/cost.py): bf16 torch.mm, fp8, and the best NVFP4 candidate."""
    out = []
    for row in rows:
        if row["impl"] == "torch.mm bf16":
            out.append({"precision": "bf16", "m": row["M"], "n": row["N"], "k": row["K"],
                        "tflops": row["throughput"]})
    for (m, n, k), (_, ms) in best.items():
        out.append({"precision": "nvfp4", "m": m, "n": n, "k": k,
                    "tflops": 2 * m * n * k / ms / 1e9})
    for (m, n, k), ms in fp8.items():
        out.append({"precision": "fp8", "m": m, "n": n, "k": k,
                    "tflops": 2 * m * n * k / ms / 1e9})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="triton")
    parser.add_argument("--shapes", default=",".join(default_shapes()))
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--configs", action="store_true",
                        help="also time the tile configurations in CONFIGS for (a) and (c)")
    args = parser.parse_args()
    common.exit_without_gpu("bench_nvfp4_gemm")
    rows, best, fp8 = [], {}, {}
    for shape in args.shapes.split(","):
        m, n, k = (int(v) for v in shape.split("x"))
        sets = common.input_sets(lambda: operands(m, n, k), (m + n) * k * 9 // 16)
        mm_ms, _ = common.mm_reference(m, n, k, reps=args.reps)

        def gemm_row(impl, ms, **extra):
            return common.row("gemm", ms, impl=impl, shape=f"M{m} N{n} K{k}",
                              throughput=2 * m * n * k / ms / 1e9, unit="TFLOP/s",
                              baseline="bf16 torch.mm", of_baseline=mm_ms / ms,
                              M=m, N=n, K=k, **extra)

        rows.append(gemm_row("torch.mm bf16", mm_ms))
        fp8[(m, n, k)] = fp8_ms(m, n, k, args.reps)
        rows.append(gemm_row("fp8 (lowprec)", fp8[(m, n, k)]))
        for backend in args.backends.split(","):
            fns, reason = entries(backend)
            if fns is None:
                print(f"skipping {backend}: {reason}")
                continue
            variants = [(name, fn, None) for name, fn in fns.items()]
            if args.configs and backend == "triton":
                variants += [(f"{name} {cfg}", fns[name], cfg) for cfg in CONFIGS
                             for name in ("fused", "dequant_triton")]
            for name, fn, cfg in variants:
                kwargs = {"config": cfg} if cfg else {}
                ms = common.median_ms(lambda ops: fn(*ops, out_dtype=torch.bfloat16, **kwargs),
                                      sets, reps=args.reps)
                rows.append(gemm_row(
                    name, ms, scratch_mb=(scratch_bytes(name, m, n, k) or 0) / 2**20))
                if backend == "triton" and cfg is None and (
                        (m, n, k) not in best or ms < best[(m, n, k)][1]):
                    best[(m, n, k)] = (name, ms)
        value_sets = [as_values(ops) for ops in sets]
        fns, no_cublaslt = values_entries()
        if no_cublaslt is not None:
            print(f"skipping values cublaslt: {no_cublaslt}")
        for name, fn in fns.items():
            ms = common.median_ms(lambda ops: fn(*ops, out_dtype=torch.bfloat16), value_sets,
                                  reps=args.reps)
            rows.append(gemm_row(name, ms))
        del value_sets
    common.print_table(rows, [("M", "M", "d"), ("N", "N", "d"), ("K", "K", "d"),
                              ("impl", "impl", "s"), ("time_ms", "ms", ".3f"),
                              ("throughput", "TFLOP/s", ".0f"),
                              ("of_baseline", "of torch.mm", ".1%"),
                              ("scratch_mb", "scratch MiB", ".0f")])
    print("wrote", common.write_results(
        "bench_nvfp4_gemm", rows,
        extra={"benchmark": "gemm", "results": planner_records(rows, best, fp8)}))
    print("DISPATCH = {")
    for shape, (name, _) in best.items():
        print(f"    {shape}: {name!r},")
    print("}")


if __name__ == "__main__":
    main()
