"""Peak memory of one CPU-backend NVFP4 quantization of a large bf16 tensor.

The cpu backend quantizes in FP32 chunks (csrc/quantize_cpu.cpp, kChunkElements), so its
peak should stay near input + outputs: 2 B + 0.5 B + 1/16 B per element. Run it alone,
under ``/usr/bin/time -v`` (its "Maximum resident set size" is the figure), e.g. for
2^31 elements (4 GiB of input; needs about 6 GB free):

    /usr/bin/time -v python -m lowprec.bench.bench_cpu_quantize_memory --log2-numel 31

The script prints the bytes of input and outputs so the ratio can be read off.
"""

import argparse
import time

import torch

import lowprec


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-numel", type=int, default=24)
    parser.add_argument("--k", type=int, default=4096, help="last dim (multiple of 16)")
    args = parser.parse_args()
    numel = 1 << args.log2_numel
    x = torch.empty(numel // args.k, args.k, dtype=torch.bfloat16)
    step = max(1, (1 << 24) // args.k)
    for r in range(0, x.shape[0], step):        # fill in slices: no FP32 copy of x
        x[r:r + step].copy_(torch.randn(min(step, x.shape[0] - r), args.k))
    start = time.perf_counter()
    q = lowprec.quantize_nvfp4(x, backend="cpu")
    seconds = time.perf_counter() - start
    out_bytes = q.data.numel() + q.scale.numel()
    print(f"shape {tuple(x.shape)} bf16: input {x.numel() * 2 / 2**30:.3f} GiB, outputs "
          f"{out_bytes / 2**30:.3f} GiB, quantize {seconds:.1f} s, amax {q.amax.item():.4g}")


if __name__ == "__main__":
    main()
