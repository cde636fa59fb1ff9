"""Kernel launches and device bytes per block on the Hopper (or Blackwell) path, no GPU.

Traces one forward+backward with ``lowprec.launch_trace`` (fake tensors, compute
capability patched, every backend installed), bf16 autocast, FP32 master weights, at
``--tokens`` tokens, and reports per block:

- **linear layers only**: each linear layer of the block traced alone and added up, the
  355M GPT's (d_model 1024: qkv 1024 -> 3072, proj 1024 -> 1024, fc 1024 -> 4096, mlp
  proj 4096 -> 1024) or a Llama-3 8B block's (d_model 4096, FFN 14336);
- **whole block**: the block itself (``lowprec.demo.model.Block`` at the 355M GPT's
  shape, sequences of 1024; ``lowprec.bench.llama_blocks.Block`` for llama8b), norms,
  attention, activation and residuals included, with its linear layers converted.
  The attention runs torch's CPU flash kernel here (fake CPU tensors), which reads and
  writes what a GPU flash kernel does.

Bytes are each launch's compulsory traffic (every tensor it reads or writes, once), so
they are a floor of what the GPU moves. Targets (issue 20): launches per Linear nvfp4 <=
12, fp8 <= 10 (sm_90); bytes per block <= 1.5x bf16.

``--values-gemm cublaslt`` traces the Hopper NVFP4 GEMM on values by cuBLASLt
(``lowprec.backends.cuda.VALUES_GEMMS``; not the default until a GPU has timed it).

    python -m lowprec.bench.bench_launches [--model gpt355m|llama8b] [--tokens 8192] [--capability 9.0]
        [--values-gemm mm_epilogue|cublaslt]
"""

import argparse
import sys

import torch

from lowprec import dispatch, launch_trace, linear_layer
from lowprec.backends import cuda
from lowprec.bench import llama_blocks
from lowprec.demo import model as demo_model
from lowprec.recipe import Recipe
from lowprec.table import format_table

BLOCKS = {
    "gpt355m": [("qkv", 1024, 3072), ("proj", 1024, 1024), ("fc", 1024, 4096),
                ("mlp.proj", 4096, 1024)],
    "llama8b": [("qkv", 4096, 6144), ("o", 4096, 4096), ("gate_up", 4096, 28672),
                ("down", 14336, 4096)],
}
SEQ_LEN = 1024
MODES = {"bf16": Recipe.uniform("bf16"), "fp8": Recipe.uniform("fp8"), "nvfp4": Recipe()}


def make_block(model):
    """One block of ``model`` with FP32 weights (the linear layers still ``nn.Linear``)."""
    if model == "gpt355m":
        return demo_model.Block(demo_model.GPTConfig(d_model=1024, n_layer=24, n_head=16,
                                                     seq_len=SEQ_LEN, vocab=50304))
    return llama_blocks.Block(llama_blocks.LlamaConfig())


def block_step(model, tokens, recipe, dtype=torch.bfloat16):
    """``(setup, step)`` for ``launch_trace.trace``: one block forward + backward on
    ``[tokens / 1024, 1024, d_model]`` under autocast, every linear layer a
    ``lowprec.Linear`` with ``recipe`` (all-BF16: ``nn.Linear``'s computation)."""
    def setup():
        block = make_block(model)
        for name, module in list(block.named_modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(module, child_name, linear_layer.Linear(
                        child.in_features, child.out_features, bias=child.bias is not None,
                        recipe=recipe))
        d_model = BLOCKS[model][0][1]
        x = torch.empty(tokens // SEQ_LEN, SEQ_LEN, d_model, dtype=dtype,
                        requires_grad=True)
        return block, x, torch.empty_like(x)
    return setup, launch_trace.forward_backward(dtype)


def linear_layers(model, tokens, capability, recipe):
    """(launches, bytes) of the block's linear layers, each traced alone, added up."""
    launches, nbytes = 0, 0
    for _, k, n in BLOCKS[model]:
        setup, step = launch_trace.linear_step(tokens, k, n, recipe, bias=False)
        trace = launch_trace.trace(step, setup, capability=capability)
        launches += trace.count
        nbytes += trace.nbytes
    return launches, nbytes


def whole_block(model, tokens, capability, recipe):
    """(launches, bytes) of one whole block."""
    setup, step = block_step(model, tokens, recipe)
    trace = launch_trace.trace(step, setup, capability=capability)
    return trace.count, trace.nbytes


def per_block(model, tokens, capability, scope=linear_layers):
    """``{mode: (launches per block, bytes per block)}``."""
    return {mode: scope(model, tokens, capability, recipe) for mode, recipe in MODES.items()}


def table(results, layers=None):
    base = results["bf16"][1]
    header = ("mode", "launches") + (("per Linear",) if layers else ()) + ("MiB", "vs bf16")
    rows = [(mode, str(n)) + ((f"{n / layers:.1f}",) if layers else ())
            + (f"{b / 2**20:.0f}", f"{b / base:.2f}x") for mode, (n, b) in results.items()]
    return format_table(header, rows, align="l" + "r" * (len(header) - 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=list(BLOCKS), default="gpt355m")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--capability", default="9.0")
    parser.add_argument("--values-gemm", choices=list(cuda.VALUES_GEMMS),
                        default=cuda.VALUES_GEMM)
    args = parser.parse_args(argv)
    if args.tokens % SEQ_LEN:
        parser.error(f"--tokens must be a multiple of the sequence length {SEQ_LEN}; "
                     f"got {args.tokens}")
    capability = dispatch.parse_capability(args.capability)
    cuda.VALUES_GEMM = args.values_gemm
    layers = len(BLOCKS[args.model])
    where = (f"{args.model} block, {args.tokens} tokens, compute capability "
             f"{args.capability}, forward + backward, Hopper GEMM on values: "
             f"{args.values_gemm}")
    print(f"{where}, linear layers only ({layers} per block):")
    print(table(per_block(args.model, args.tokens, capability), layers))
    print(f"\n{where}, whole block (norms, attention, activation, residuals included):")
    print(table(per_block(args.model, args.tokens, capability, whole_block)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
