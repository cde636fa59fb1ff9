"""Training-step benchmark on a GPT of ~350M parameters (GPU only).

The model is the demo's GPT (``lowprec.demo.model``) at 24 blocks, d_model 1024 and a
50304-token vocabulary. Its LM head is tied to the embedding and applied with
``F.linear``: it is not an ``nn.Linear``, so it stays BF16 in every mode and is not among
the linear layers whose saved inputs are counted below.

Modes, each a full step (forward, backward, AdamW) under bf16 autocast with FP32 master
weights, compiled with torch.compile unless --no-compile:

* ``bf16``   plain ``nn.Linear`` everywhere (the baseline);
* ``fp8``    every block linear in FP8 (``Recipe.uniform("fp8")``), LM head BF16;
* ``nvfp4``  ``lowprec.convert`` defaults: the NVFP4 recipe, the last ~15% of blocks and
  the LM head BF16 (emulated off Blackwell: exact dequantization + BF16/FP32 GEMMs);
* ``torchao-float8-rowwise``  torchao's float8 training with the rowwise recipe on the
  block linears, if torchao imports.

Reported per mode: median step time over ``--steps`` timed steps (CUDA events, after
``--warmup`` steps), tokens/s and its ratio to BF16, peak allocated memory, and the
bytes that the linear layers keep for the backward from their inputs (measured in one
eager forward: every tensor saved for backward inside a linear layer's forward, except
the parameters and weight-shaped casts of them), with its ratio to BF16.

Targets (H100/H200): FP8 >= 1.15x BF16 tokens/s and >= torchao float8; NVFP4
step time <= 1.4x BF16; NVFP4 linear-input activation bytes <= 0.6x BF16.

Without a GPU this prints "no GPU" and exits 0 (``--allow-cpu`` runs a tiny model on
CPU to check the code path; its figures mean nothing and are not recorded).

Usage: python bench/bench_train_step.py [--batch 8 --seq 1024 --steps 20 --warmup 5]
"""

import argparse
import os
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lowprec  # noqa: E402
from bench import common  # noqa: E402
from lowprec.conversion import convert  # noqa: E402
from lowprec.discovery import candidate_layers  # noqa: E402
from lowprec.demo.model import GPT, GPTConfig  # noqa: E402
from lowprec.plan import LayerPlan, Plan  # noqa: E402
from lowprec.recipe import Recipe  # noqa: E402
from lowprec.table import format_table  # noqa: E402

GPT_350M = dict(vocab=50304, d_model=1024, n_layer=24, n_head=16)
GPT_TINY = dict(vocab=256, d_model=48, n_layer=2, n_head=4)


def loss_fn(model, tokens):
    return model(tokens[:, :-1], tokens[:, 1:])


# -- modes ----------------------------------------------------------------------------

def blocks_only_plan(model, precision):
    """Every block linear in ``precision``, everything else (the LM head) BF16."""
    layers = []
    for name, module, forced in candidate_layers(model):
        in_blocks = name.startswith("blocks.") and forced is None
        chosen = precision if in_blocks else "bf16"
        layers.append(LayerPlan(name, tuple(module.weight.shape), chosen, chosen, chosen,
                                reason="benchmark: block linears" if in_blocks
                                else forced or "benchmark: LM head kept BF16"))
    return Plan(layers, {"planner": "bench_train_step"})


def build(mode, config, seq_len, device):
    torch.manual_seed(0)
    model = GPT(GPTConfig(seq_len=seq_len, **config)).to(device)
    if mode == "fp8":
        convert(model, plan=blocks_only_plan(model, "fp8"), recipe=Recipe.uniform("fp8"))
    elif mode == "nvfp4":
        convert(model)
    elif mode == "torchao-float8-rowwise":
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
        convert_to_float8_training(
            model, config=Float8LinearConfig.from_recipe_name("rowwise"),
            module_filter_fn=lambda module, fqn: fqn.startswith("blocks."))
    return model


def available_modes():
    modes = ["bf16", "fp8", "nvfp4"]
    try:
        import torchao.float8  # noqa: F401
        modes.append("torchao-float8-rowwise")
    except ImportError as err:
        print(f"torchao float8 not importable, skipped: {err}")
    return modes


# -- measurements ---------------------------------------------------------------------

def linear_input_bytes(model, tokens):
    """Bytes the linear layers save for backward in one forward (see module docstring)."""
    params = {p.data_ptr() for p in model.parameters()}
    counted, total = set(), 0
    active = []                  # (saved-tensor hooks context, weight shapes) per call

    def pack(t):
        nonlocal total
        weight_like = tuple(t.shape) in active[-1][1]     # e.g. an autocast weight copy
        if t.data_ptr() not in params and not weight_like and t.data_ptr() not in counted:
            counted.add(t.data_ptr())
            total += t.numel() * t.element_size()
        return t

    def enter(module, args):
        n, k = module.weight.shape
        context = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        active.append((context, {(n, k), (k, n)}))
        context.__enter__()

    def leave(module, args, out):
        active.pop()[0].__exit__(None, None, None)

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            hooks += [module.register_forward_pre_hook(enter),
                      module.register_forward_hook(leave)]
    with torch.autocast(tokens.device.type, dtype=torch.bfloat16):
        loss = loss_fn(model, tokens)
    del loss
    for hook in hooks:
        hook.remove()
    return total


def time_steps(model, tokens, steps, warmup, compile_model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=tokens.is_cuda)
    step_loss = torch.compile(loss_fn) if compile_model else loss_fn
    def step():
        with torch.autocast(tokens.device.type, dtype=torch.bfloat16):
            loss = step_loss(model, tokens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    times = []
    for i in range(warmup + steps):
        ms, loss = common.timed_ms(step, cuda=tokens.is_cuda)
        if i >= warmup:
            times.append(ms / 1e3)
    return statistics.median(times), loss.item()


def run_mode(mode, args, config, device):
    model = build(mode, config, args.seq, device)
    gen = torch.Generator(device="cpu").manual_seed(1)
    tokens = torch.randint(config["vocab"], (args.batch, args.seq + 1), generator=gen)
    tokens = tokens.to(device)
    act_bytes = linear_input_bytes(model, tokens)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    step_s, loss = time_steps(model, tokens, args.steps, args.warmup, not args.no_compile)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return {"step_s": step_s, "tokens_per_s": args.batch * args.seq / step_s,
            "peak_bytes": peak, "linear_input_bytes": act_bytes, "last_loss": loss,
            "params": sum(p.numel() for p in model.parameters())}


def backends_available(device):
    return lowprec.available(return_reason=True, device_type=device.type)


def report(results):
    base = results["bf16"]
    print(format_table(
        ("mode", "step ms", "tok/s", "vs bf16", "peak GiB", "lin-in MiB", "vs bf16"),
        [(mode, f"{1e3 * r['step_s']:.1f}", f"{r['tokens_per_s']:.0f}",
          f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x",
          "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**30:.2f}",
          f"{r['linear_input_bytes'] / 2**20:.1f}",
          f"{r['linear_input_bytes'] / base['linear_input_bytes']:.2f}x")
         for mode, r in results.items()], align="lrrrrrr"))
    checks = {}
    if "fp8" in results:
        checks["fp8 >= 1.15x bf16 tokens/s"] = (
            results["fp8"]["tokens_per_s"] >= 1.15 * base["tokens_per_s"])
    if "fp8" in results and "torchao-float8-rowwise" in results:
        checks["fp8 >= torchao float8 tokens/s"] = (
            results["fp8"]["tokens_per_s"] >= results["torchao-float8-rowwise"]["tokens_per_s"])
    if "nvfp4" in results:
        checks["nvfp4 step <= 1.4x bf16"] = results["nvfp4"]["step_s"] <= 1.4 * base["step_s"]
        checks["nvfp4 linear-input bytes <= 0.6x bf16"] = (
            results["nvfp4"]["linear_input_bytes"] <= 0.6 * base["linear_input_bytes"])
    for name, ok in checks.items():
        print(f"{'met' if ok else 'MISSED':>7}  {name}")
    return checks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--modes", nargs="*", default=None)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="tiny model on CPU: checks the code path, records nothing")
    args = parser.parse_args(argv)

    if torch.cuda.is_available():
        device, config = torch.device("cuda"), GPT_350M
    elif args.allow_cpu:
        device, config = torch.device("cpu"), GPT_TINY
    else:
        print("no GPU: this benchmark measures GPU training steps; nothing to do")
        return 0

    modes = args.modes or available_modes()
    if "bf16" not in modes:
        modes = ["bf16"] + modes                    # every ratio is against BF16
    results = {}
    for mode in modes:
        print(f"running {mode} ...", flush=True)
        results[mode] = run_mode(mode, args, config, device)
    checks = report(results)

    if device.type == "cuda":
        base_s = results["bf16"]["step_s"]
        rows = [common.row(mode, 1e3 * r["step_s"], shape=f"batch {args.batch} x seq {args.seq}",
                           throughput=r["tokens_per_s"], unit="tok/s", baseline="bf16",
                           of_baseline=base_s / r["step_s"], **r)
                for mode, r in results.items()]
        print("wrote", common.write_results(
            "bench_train_step", rows, extra={"args": vars(args), "model": config,
                                             "lowprec_backends": backends_available(device),
                                             "targets": checks}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
