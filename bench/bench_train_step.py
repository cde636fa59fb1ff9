"""Training-step benchmark on a GPT of ~350M parameters (GPU only).

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

Targets (issue 5, H100/H200): FP8 >= 1.15x BF16 tokens/s and >= torchao float8; NVFP4
step time <= 1.4x BF16; NVFP4 linear-input activation bytes <= 0.6x BF16.

Without a GPU this prints "no GPU" and exits 0 (``--allow-cpu`` runs a tiny model on
CPU to check the code path; its figures mean nothing and are not recorded).

Usage: python bench/bench_train_step.py [--batch 8 --seq 1024 --steps 20 --warmup 5]
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import lowprec
from lowprec.convert import candidate_layers, convert
from lowprec.plan import LayerPlan, Plan
from lowprec.recipe import Recipe

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GPT_350M = dict(vocab=50304, d_model=1024, n_blocks=24, n_heads=16)
GPT_TINY = dict(vocab=256, d_model=48, n_blocks=2, n_heads=4)


# -- the model ------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, 4 * d_model, bias=False)
        self.fc2 = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2)
                   for z in (q, k, v))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab, d_model, n_blocks, n_heads, seq_len):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_blocks))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens):
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def loss_fn(model, tokens):
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())


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
    model = GPT(seq_len=seq_len, **config).to(device)
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
    cuda = tokens.is_cuda
    times = []
    for i in range(warmup + steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            t0 = time.perf_counter()
        with torch.autocast(tokens.device.type, dtype=torch.bfloat16):
            loss = step_loss(model, tokens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end) / 1e3
        else:
            elapsed = time.perf_counter() - t0
        if i >= warmup:
            times.append(elapsed)
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


def device_facts(device):
    facts = {"torch": torch.__version__, "python": platform.python_version(),
             "lowprec_backends": lowprec.available(return_reason=True,
                                                   device_type=device.type)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(name=props.name, capability=f"{props.major}.{props.minor}",
                     memory_bytes=props.total_memory, cuda=torch.version.cuda)
    return facts


def report(results):
    base = results["bf16"]
    print(f"{'mode':<24}{'step ms':>10}{'tok/s':>12}{'vs bf16':>9}{'peak GiB':>10}"
          f"{'lin-in MiB':>12}{'vs bf16':>9}")
    for mode, r in results.items():
        peak = "" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**30:.2f}"
        print(f"{mode:<24}{1e3 * r['step_s']:>10.1f}{r['tokens_per_s']:>12.0f}"
              f"{r['tokens_per_s'] / base['tokens_per_s']:>8.2f}x{peak:>10}"
              f"{r['linear_input_bytes'] / 2**20:>12.1f}"
              f"{r['linear_input_bytes'] / base['linear_input_bytes']:>8.2f}x")
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
        os.makedirs(RESULTS_DIR, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(RESULTS_DIR, f"train_step_{stamp}.json")
        with open(path, "w") as f:
            json.dump({"args": vars(args), "model": config, "device": device_facts(device),
                       "results": results, "targets": checks}, f, indent=2)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
