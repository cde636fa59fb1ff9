"""Training-step benchmark (GPU): where a step's time goes, per precision mode.

Two models:
* ``gpt355m``: the demo's GPT (``lowprec.demo.model``) at 24 blocks, d_model 1024, a
  50304-token vocabulary. Its LM head is tied to the embedding and applied with
  ``F.linear``: it stays BF16 in every mode and is not counted among the linear layers.
* ``llama4096``: Llama-style blocks (lowprec/bench/llama_blocks.py: d_model 4096, SwiGLU FFN
  14336, GQA), ``--blocks`` of them on embedded inputs, where FP8 can pay on Hopper.

Modes, each a full step (forward, backward, fused AdamW) under bf16 autocast with FP32
master weights: ``bf16`` (plain ``nn.Linear``, the baseline), ``fp8`` (every block
linear ``Recipe.uniform("fp8")``), ``nvfp4`` (``lowprec.convert`` defaults; emulated off
Blackwell), ``nvfp4-cublaslt`` (the same on Hopper with the emulation's GEMM on values by
cuBLASLt, ``lowprec.backends.cuda.VALUES_GEMM = "cublaslt"``, where the extension has it),
``torchao-float8-rowwise`` (torchao's float8 training, rowwise, on the block
linears, if torchao imports). Execution (``--exec``): ``eager``, ``compile``
(``torch.compile``), ``cudagraphs`` (``torch.compile(mode="reduce-overhead")``, which
captures what it can).

Each (model, mode, execution) runs in a fresh process, so that one mode's memory cannot
linger into the next one's peak. Reported: median step time (CUDA events) over
``--steps`` after ``--warmup``, tokens/s and the ratio to BF16 (same model and
execution), peak allocated memory and its ratio to BF16, the bytes the linear layers save
for the backward from their inputs (eager forward), and from ``torch.profiler`` over
three steps: the share of the step the GPU is busy (union of kernel intervals over the
wall time) and the top kernels with their time per step.

Targets (issue 20; H100/H200): GPU busy >= 90%; llama4096 FP8 >= 1.2x BF16 tokens/s and
>= torchao float8, NVFP4 step <= 1.3x BF16; gpt355m FP8 >= 1.0x; peak memory <= BF16.

Without a GPU this prints "no GPU" and exits 0 (``--allow-cpu`` runs tiny models on the
CPU to check the code path; its figures mean nothing and are not recorded).

Usage: python -m lowprec.bench.bench_train_step [--model gpt355m llama4096] [--exec eager compile]
       [--batch 8 --seq 1024 --steps 20 --warmup 5 --blocks 4]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn


import lowprec
from lowprec.bench import common
from lowprec.bench.llama_blocks import LlamaBlocks, LlamaConfig
from lowprec.conversion import convert
from lowprec.discovery import candidate_layers
from lowprec.demo.model import GPT, GPTConfig
from lowprec.plan import LayerPlan, Plan
from lowprec.recipe import Recipe
from lowprec.table import format_table

MODELS = {
    "gpt355m": {"gpu": dict(vocab=50304, d_model=1024, n_layer=24, n_head=16),
                "cpu": dict(vocab=256, d_model=48, n_layer=2, n_head=4)},
    "llama4096": {"gpu": dict(d_model=4096, ffn=14336, n_head=32, n_kv_head=8),
                  "cpu": dict(d_model=64, ffn=96, n_head=4, n_kv_head=2)},
}
EXECUTIONS = ("eager", "compile", "cudagraphs")


# -- models and modes -----------------------------------------------------------------

def build_model(name, size, seq_len, blocks, device):
    torch.manual_seed(0)
    config = MODELS[name][size]
    if name == "gpt355m":
        return GPT(GPTConfig(seq_len=seq_len, **config)).to(device)
    return LlamaBlocks(LlamaConfig(n_layer=blocks, **config)).to(device)


def make_batch(name, model, args, device):
    """What one step consumes: token ids for the GPT, embedded bf16 inputs for Llama."""
    gen = torch.Generator(device="cpu").manual_seed(1)
    if name == "gpt355m":
        tokens = torch.randint(model.cfg.vocab, (args.batch, args.seq + 1), generator=gen)
        return tokens.to(device)
    d_model = model.blocks[0].norm1.weight.shape[0]
    return torch.randn(args.batch, args.seq, d_model, generator=gen).to(device, torch.bfloat16)


def loss_fn(model, batch):
    if batch.dtype == torch.long:
        return model(batch[:, :-1], batch[:, 1:])
    return model(batch)


def blocks_only_plan(model, precision):
    """Every block linear in ``precision``, everything else (the LM head) BF16."""
    layers = []
    for name, module, forced in candidate_layers(model):
        in_blocks = name.startswith("blocks.") and forced is None
        chosen = precision if in_blocks else "bf16"
        layers.append(LayerPlan(name, tuple(module.weight.shape), Recipe.uniform(chosen),
                                reason="benchmark: block linears" if in_blocks
                                else forced or "benchmark: LM head kept BF16"))
    return Plan(layers, {"planner": "bench_train_step"})


def apply_mode(model, mode):
    if mode == "fp8":
        convert(model, plan=blocks_only_plan(model, "fp8"), recipe=Recipe.uniform("fp8"))
    elif mode == "nvfp4":
        convert(model)
    elif mode == "nvfp4-cublaslt":
        from lowprec.backends import cuda
        cuda.VALUES_GEMM = "cublaslt"      # before the first call resolves the kernel table
        convert(model)
    elif mode == "torchao-float8-rowwise":
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
        convert_to_float8_training(
            model, config=Float8LinearConfig.from_recipe_name("rowwise"),
            module_filter_fn=lambda module, fqn: fqn.startswith("blocks."))
    return model


def available_modes():
    modes = ["bf16", "fp8", "nvfp4"]
    from lowprec import _C, blackwell
    no_cublaslt = _C.cublaslt_reason()
    if no_cublaslt is None and torch.cuda.is_available() and (
            torch.cuda.get_device_capability() < blackwell.MIN_CAPABILITY):
        modes.append("nvfp4-cublaslt")
    else:
        print(f"nvfp4-cublaslt skipped: {no_cublaslt or 'the native FP4 GEMM runs here'}")
    try:
        import torchao.float8  # noqa: F401
        modes.append("torchao-float8-rowwise")
    except ImportError as err:
        print(f"torchao float8 not importable, skipped: {err}")
    return modes


# -- measurements ---------------------------------------------------------------------

def linear_input_bytes(model, batch):
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
        # Detached: holding the tensor itself (its grad_fn among the saved ones) would
        # tie the graph into a cycle that outlives this forward, and with it the model.
        return t.detach()

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
    with torch.autocast(batch.device.type, dtype=torch.bfloat16):
        loss = loss_fn(model, batch)
    del loss
    for hook in hooks:
        hook.remove()
    return total


def make_step(model, batch, execution):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=batch.is_cuda)
    forward = loss_fn
    if execution == "compile":
        forward = torch.compile(loss_fn)
    elif execution == "cudagraphs":
        forward = torch.compile(loss_fn, mode="reduce-overhead")

    def step():
        with torch.autocast(batch.device.type, dtype=torch.bfloat16):
            loss = forward(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def time_steps(step, steps, warmup, cuda):
    times = []
    for i in range(warmup + steps):
        ms, loss = common.timed_ms(step, cuda=cuda)
        if i >= warmup:
            times.append(ms / 1e3)
    return statistics.median(times), loss.item()


def gpu_profile(step, steps=3, top=5):
    """(GPU-busy share of the wall time, [(kernel, ms per step)]) over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - start) * 1e6
    intervals = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                       if e.device_type == torch.autograd.DeviceType.CUDA)
    busy, end = 0.0, float("-inf")
    for lo, hi in intervals:                 # the union of the kernels' intervals
        if hi > end:
            busy += hi - max(lo, end)
            end = hi
    kernels = sorted(prof.key_averages(), key=lambda e: e.self_device_time_total,
                     reverse=True)
    top_kernels = [(e.key[:60], e.self_device_time_total / 1e3 / steps)
                   for e in kernels[:top] if e.self_device_time_total > 0]
    return busy / wall_us, top_kernels


def run_one(model_name, mode, execution, args, device):
    """One (model, mode, execution) in this process: the record for the report."""
    size = "gpu" if device.type == "cuda" else "cpu"
    model = apply_mode(build_model(model_name, size, args.seq, args.blocks, device), mode)
    batch = make_batch(model_name, model, args, device)
    act_bytes = linear_input_bytes(model, batch)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    step = make_step(model, batch, execution)
    step_s, loss = time_steps(step, args.steps, args.warmup, device.type == "cuda")
    record = {"model": model_name, "mode": mode, "exec": execution, "step_s": step_s,
              "tokens_per_s": args.batch * args.seq / step_s, "linear_input_bytes": act_bytes,
              "last_loss": loss, "params": sum(p.numel() for p in model.parameters()),
              "peak_bytes": None, "gpu_busy": None, "top_kernels": []}
    if device.type == "cuda":
        record["peak_bytes"] = torch.cuda.max_memory_allocated()
        record["gpu_busy"], record["top_kernels"] = gpu_profile(step)
    return record


def run_isolated(model_name, mode, execution, args):
    """``run_one`` in a fresh Python process; its record, or None (and why) if it failed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "record.json")
        command = [sys.executable, "-m", "lowprec.bench.bench_train_step", "--child", out,
                   "--model", model_name, "--modes", mode, "--exec", execution,
                   "--batch", str(args.batch), "--seq", str(args.seq),
                   "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--blocks", str(args.blocks)] + (["--allow-cpu"] if args.allow_cpu else [])
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not os.path.exists(out):
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            print(f"  {model_name} {mode} {execution}: FAILED ({' / '.join(tail)})")
            return None
        with open(out) as f:
            return json.load(f)


# -- report ---------------------------------------------------------------------------

def _ratio(value, base):
    return "-" if value is None or not base else f"{value / base:.2f}x"


def report(records):
    rows = []
    for r in records:
        base = next((b for b in records if b["mode"] == "bf16" and b["model"] == r["model"]
                     and b["exec"] == r["exec"]), None)
        top = r["top_kernels"][0] if r["top_kernels"] else None
        rows.append((r["model"], r["mode"], r["exec"], f"{1e3 * r['step_s']:.1f}",
                     f"{r['tokens_per_s']:.0f}",
                     _ratio(r["tokens_per_s"], base and base["tokens_per_s"]),
                     "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**30:.2f}",
                     _ratio(r["peak_bytes"], base and base["peak_bytes"]),
                     f"{r['linear_input_bytes'] / 2**20:.1f}",
                     "-" if r["gpu_busy"] is None else f"{100 * r['gpu_busy']:.0f}%",
                     "-" if top is None else f"{top[0]} {top[1]:.2f} ms"))
    print(format_table(("model", "mode", "exec", "step ms", "tok/s", "vs bf16", "peak GiB",
                        "vs bf16", "lin-in MiB", "GPU busy", "top kernel"), rows,
                       align="llllrrrrrrl"))
    return checks(records)


def checks(records):
    """Issue 20's targets, each met or missed, for the records that measure it."""
    def find(model, mode, execution="eager"):
        return next((r for r in records if (r["model"], r["mode"], r["exec"]) ==
                     (model, mode, execution)), None)
    out = {}
    for execution in EXECUTIONS:
        llama_bf16, llama_fp8 = find("llama4096", "bf16", execution), find("llama4096", "fp8", execution)
        llama_nv, llama_ao = find("llama4096", "nvfp4", execution), find(
            "llama4096", "torchao-float8-rowwise", execution)
        gpt_bf16, gpt_fp8 = find("gpt355m", "bf16", execution), find("gpt355m", "fp8", execution)
        if llama_bf16 and llama_fp8:
            out[f"llama4096 {execution}: fp8 >= 1.2x bf16 tokens/s"] = (
                llama_fp8["tokens_per_s"] >= 1.2 * llama_bf16["tokens_per_s"])
        if llama_fp8 and llama_ao:
            out[f"llama4096 {execution}: fp8 >= torchao float8"] = (
                llama_fp8["tokens_per_s"] >= llama_ao["tokens_per_s"])
        if llama_bf16 and llama_nv:
            out[f"llama4096 {execution}: nvfp4 step <= 1.3x bf16"] = (
                llama_nv["step_s"] <= 1.3 * llama_bf16["step_s"])
        if gpt_bf16 and gpt_fp8:
            out[f"gpt355m {execution}: fp8 >= 1.0x bf16 tokens/s"] = (
                gpt_fp8["tokens_per_s"] >= gpt_bf16["tokens_per_s"])
    for r in records:
        base = find(r["model"], "bf16", r["exec"])
        if r["mode"] != "bf16" and base and r["peak_bytes"] is not None:
            out[f"{r['model']} {r['exec']} {r['mode']}: peak memory <= bf16"] = (
                r["peak_bytes"] <= base["peak_bytes"])
        if r["gpu_busy"] is not None:
            out[f"{r['model']} {r['exec']} {r['mode']}: GPU busy >= 90%"] = r["gpu_busy"] >= 0.9
    for name, ok in out.items():
        print(f"{'met' if ok else 'MISSED':>7}  {name}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--exec", nargs="+", choices=EXECUTIONS, default=["eager", "compile"])
    parser.add_argument("--modes", nargs="*", default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--blocks", type=int, default=4, help="Llama blocks")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="same as --exec eager")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="tiny models on CPU: checks the code path, records nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)   # internal: one run, to a file
    args = parser.parse_args(argv)
    executions = ["eager"] if args.no_compile else args.exec

    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.allow_cpu:
        device = torch.device("cpu")
    else:
        print("no GPU: this benchmark measures GPU training steps; nothing to do")
        return 0

    if args.child:
        record = run_one(args.model[0], args.modes[0], executions[0], args, device)
        with open(args.child, "w") as f:
            json.dump(record, f)
        return 0

    modes = args.modes or available_modes()
    if "bf16" not in modes:
        modes = ["bf16"] + modes                    # every ratio is against BF16
    records = []
    for model_name in args.model:
        for execution in executions:
            for mode in modes:
                print(f"running {model_name} {mode} {execution} ...", flush=True)
                record = run_isolated(model_name, mode, execution, args)
                if record is not None:
                    records.append(record)
    results = report(records)

    if device.type == "cuda":
        rows = []
        for r in records:
            base = next((b for b in records if b["mode"] == "bf16" and
                         (b["model"], b["exec"]) == (r["model"], r["exec"])), r)
            rows.append(common.row(f"{r['model']} {r['mode']} {r['exec']}",
                                   1e3 * r["step_s"],
                                   shape=f"batch {args.batch} x seq {args.seq}",
                                   throughput=r["tokens_per_s"], unit="tok/s",
                                   baseline="bf16", of_baseline=base["step_s"] / r["step_s"],
                                   **r))
        print("wrote", common.write_results(
            "bench_train_step", rows,
            extra={"args": vars(args), "models": {m: MODELS[m]["gpu"] for m in args.model},
                   "lowprec_backends": lowprec.available(return_reason=True,
                                                         device_type="cuda"),
                   "targets": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
