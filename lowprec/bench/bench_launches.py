"""Kernel launches and device bytes per block on the Hopper (or Blackwell) path, no GPU.

Traces one forward+backward of each linear layer of a block with ``lowprec.launch_trace``
(fake tensors, compute capability patched, every backend installed) and adds them up per
block: the 355M GPT's (d_model 1024: qkv 1024 -> 3072, proj 1024 -> 1024, fc 1024 ->
4096, mlp proj 4096 -> 1024) or a Llama-3 8B block's (d_model 4096, FFN 14336), at
``--tokens`` tokens, bf16 autocast, FP32 master weights. Only the linear layers: the
attention, norms and activations launch the same kernels in every mode.

Bytes are each launch's compulsory traffic (every tensor it reads or writes, once), so
they are a floor of what the GPU moves. Targets (issue 20): launches per Linear nvfp4 <=
12, fp8 <= 10; bytes per block <= 1.5x bf16.

    python -m lowprec.bench.bench_launches [--model gpt355m|llama8b] [--tokens 8192] [--capability 9.0]
"""

import argparse
import sys

from lowprec import dispatch, launch_trace
from lowprec.recipe import Recipe
from lowprec.table import format_table

BLOCKS = {
    "gpt355m": [("qkv", 1024, 3072), ("proj", 1024, 1024), ("fc", 1024, 4096),
                ("mlp.proj", 4096, 1024)],
    "llama8b": [("qkv", 4096, 6144), ("o", 4096, 4096), ("gate_up", 4096, 28672),
                ("down", 14336, 4096)],
}
MODES = {"bf16": Recipe.uniform("bf16"), "fp8": Recipe.uniform("fp8"), "nvfp4": Recipe()}


def per_block(model, tokens, capability):
    """``{mode: (launches per block, bytes per block, {layer: launches})}``."""
    out = {}
    for mode, recipe in MODES.items():
        launches, nbytes, layers = 0, 0, {}
        for name, k, n in BLOCKS[model]:
            setup, step = launch_trace.linear_step(tokens, k, n, recipe, bias=False)
            trace = launch_trace.trace(step, setup, capability=capability)
            launches += trace.count
            nbytes += trace.nbytes
            layers[name] = trace.count
        out[mode] = (launches, nbytes, layers)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=list(BLOCKS), default="gpt355m")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--capability", default="9.0")
    args = parser.parse_args(argv)
    capability = dispatch.parse_capability(args.capability)
    results = per_block(args.model, args.tokens, capability)
    base_launches, base_bytes, _ = results["bf16"]
    layers = len(BLOCKS[args.model])
    print(f"{args.model} block, {args.tokens} tokens, compute capability {args.capability}, "
          f"linear layers only ({layers} per block), forward + backward:")
    print(format_table(
        ("mode", "launches", "per Linear", "MiB", "vs bf16"),
        [(mode, str(n), f"{n / layers:.1f}", f"{b / 2**20:.0f}", f"{b / base_bytes:.2f}x")
         for mode, (n, b, _) in results.items()], align="lrrrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
