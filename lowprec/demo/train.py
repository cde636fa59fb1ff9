"""Train the demo GPT in several precision configurations and return the loss curves.

Every configuration starts from the same initial weights (one ``torch.manual_seed``
before the model is built), sees the same batches in the same order (a private
generator), and draws its stochastic-rounding keys from a CPU generator reseeded before
training, so two configurations differ only in their precisions and a rerun with the
same seed repeats every number on the same machine and backend.

High precision means FP32 on a CPU and BF16 autocast on a GPU: lowprec's ``"bf16"``
recipe runs a GEMM unquantized in the layer's compute dtype. The configuration is
called ``"bf16"`` in the record, and labelled by what it computes in (``run["label"]``,
"fp32" on a CPU) wherever a reader sees it.
"""

import contextlib
import dataclasses
import logging
import math
import time

import torch

import lowprec
from lowprec.discovery import find_layers
from lowprec.planner import options
from lowprec.policy import default_plan
from lowprec.demo import corpus as corpus_mod
from lowprec.demo.model import GPT, GPTConfig
from lowprec.demo.report import find_spikes
from lowprec.progress import Progress

# Library messages go to logging (a child of the "lowprec" logger); the CLI passes
# ``log=print`` for its console output.
LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_fraction: float = 0.1      # cosine decay ends at lr * this
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 25
    eval_batches: int = 4             # per point of the validation curve
    final_eval_batches: int = 16      # for the final loss that the tables compare
    calibration_batches: int = 4      # for the planner
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batches",
                     "final_eval_batches", "calibration_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1; got "
                                 f"{getattr(self, name)}")


# Sizes. "cpu" fits the 5-minute budget on 2 cores with the reference backend (README
# states the measured time); "quick" is for tests; "gpu" uses the kernels.
PRESETS = {
    "quick": (GPTConfig(d_model=32, n_layer=2, n_head=2, seq_len=32),
              TrainConfig(steps=12, batch_size=8, eval_every=6, eval_batches=2,
                          final_eval_batches=2, calibration_batches=2,
                          warmup_fraction=0.1)),
    "cpu": (GPTConfig(d_model=64, n_layer=4, n_head=4, seq_len=64),
            TrainConfig(steps=200, batch_size=16)),
    "gpu": (GPTConfig(d_model=256, n_layer=8, n_head=8, seq_len=256),
            TrainConfig(steps=1000, batch_size=32, lr=1e-3, eval_every=100,
                        eval_batches=8, final_eval_batches=32)),
}


# The demo's matrices are tiny ([1024, 64] activations), so intra-op threads gain little,
# and OpenMP's spinning threads collapse when the machine is oversubscribed: measured on
# 2 busy cores, a BF16 step took 1296 ms with 2 threads and 42 ms with 1. One thread
# makes the demo's run time predictable on a shared machine (CI, a laptop in use).
CPU_THREADS = 1


@contextlib.contextmanager
def cpu_threads(device, threads=None):
    """Run with ``threads`` intra-op threads (default ``CPU_THREADS`` on a CPU device,
    unchanged on a GPU); the caller's setting is restored afterwards."""
    if threads is None and device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads or CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def high_precision_label(device):
    """What the ``"bf16"`` configuration really computes in on ``device``."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def default_preset(quick=False):
    if quick:
        return "quick"
    return "gpu" if torch.cuda.is_available() else "cpu"


def lr_at(step, cfg):
    """Linear warmup, then cosine decay to ``lr * min_lr_fraction``."""
    warmup = max(1, int(cfg.warmup_fraction * cfg.steps))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    floor = cfg.min_lr_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _autocast(device):
    # BF16 autocast on a GPU (the high-precision baseline of the recipe); none on a CPU,
    # where BF16 matmuls are slow and FP32 is the honest high-precision reference.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _to(batch, device):
    return tuple(t.to(device, non_blocking=True) for t in batch)


def build_model(model_cfg, seed, device):
    torch.manual_seed(seed)
    return GPT(model_cfg).to(device)


def make_optimizer(model, cfg):
    """The demo's AdamW. No decay on vectors (norm gains, biases): decaying them only
    fights the norms."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.95))


@torch.no_grad()
def evaluate(model, batches, device):
    model.eval()
    with _autocast(device):
        losses = [model(*_to(batch, device)).float().item() for batch in batches]
    model.train()
    return sum(losses) / len(losses)


def train(model, corpus, cfg, device, label="train", progress=True):
    """Train ``model`` for ``cfg.steps`` steps; returns the curves as a dict.

    Keys: ``train_loss`` (one per step), ``val`` (``[step, loss]`` pairs on
    ``eval_batches``, step 0 first), ``final_val_loss`` (on ``final_eval_batches``, a
    larger sample: the number the tables compare), ``final_train_loss`` (mean of the last
    10% of steps),
    ``seconds``, ``diverged`` (a non-finite loss stopped the run; the loss is recorded),
    ``spikes`` (``[step, loss]`` of training-loss spikes, ``report.find_spikes``).
    """
    seq_len = model.cfg.seq_len
    batches = corpus.train_batches(cfg.batch_size, seq_len, seed=cfg.seed)
    val_batches = corpus.val_batches(cfg.batch_size, seq_len, cfg.eval_batches)
    optimizer = make_optimizer(model, cfg)
    torch.manual_seed(cfg.seed + 1)       # fixes every stochastic-rounding key
    train_loss, val = [], [[0, evaluate(model, val_batches, device)]]
    diverged = False
    start = time.perf_counter()
    with Progress(label, cfg.steps, enabled=progress) as bar:
        for step in range(cfg.steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            with _autocast(device):
                loss = model(*_to(next(batches), device))
            value = loss.item()
            train_loss.append(value)
            if not math.isfinite(value):
                diverged = True
                break
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                val.append([step + 1, evaluate(model, val_batches, device)])
            # The step of the last evaluation goes with its value: it is not this step's;
            # and its batch count, as the final table's val is on more batches.
            bar.update(step + 1, loss=value, **{
                f"val@{val[-1][0]}": f"{val[-1][1]:.3f} on {cfg.eval_batches} batches"})
    if device.type == "cuda":
        torch.cuda.synchronize()
    final_val = float("nan")
    if not diverged:
        final_batches = corpus.val_batches(cfg.batch_size, seq_len, cfg.final_eval_batches)
        final_val = evaluate(model, final_batches, device)
    tail = train_loss[-max(1, len(train_loss) // 10):]
    return {"train_loss": train_loss, "val": val, "final_val_loss": final_val,
            "final_train_loss": sum(tail) / len(tail),
            "seconds": time.perf_counter() - start, "diverged": diverged,
            "spikes": find_spikes(train_loss)}


def calibration_batches(corpus, model_cfg, cfg, device):
    """A few training batches for the planner, from a stream of their own (seed + 1000)
    so that planning never shifts the batches training sees."""
    stream = corpus.train_batches(cfg.batch_size, model_cfg.seq_len, seed=cfg.seed + 1000)
    return [_to(next(stream), device) for _ in range(cfg.calibration_batches)]


def planner_loss(device):
    """The loss the planner differentiates: the model's own, under training's autocast."""
    def loss_fn(model, batch):
        with _autocast(device):
            return model(*batch).float()
    return loss_fn


# A configuration: name -> function(model, context) returning the converted model.
# ``context`` carries what the planner needs (calibration batches, budget, device).

def convert_bf16(model, ctx):
    return model                      # every linear stays nn.Linear: high precision


def convert_default(model, ctx):
    return lowprec.convert(model, recipe=ctx.get("recipe"))


def convert_planned(model, ctx):
    return lowprec.convert(model, budget=ctx["budget"], calibration=ctx["calibration"],
                           loss_fn=planner_loss(ctx["device"]), recipe=ctx.get("recipe"))


def convert_all_nvfp4(model, ctx):
    """Every linear layer in the recipe, the BF16 blocks of the default plan included."""
    recipe = ctx.get("recipe") or lowprec.Recipe()
    bf16 = recipe.replace(fprop="bf16", dgrad="bf16", wgrad="bf16")
    layers = [lowprec.LayerPlan(name, tuple(module.weight.shape), bf16 if forced else recipe,
                                reason=forced or "every layer NVFP4 (no BF16 layers)")
              for name, module, forced in lowprec.candidate_layers(model)]
    plan = lowprec.Plan(layers, {"planner": "all layers", "recipe": recipe.to_dict()})
    return lowprec.convert(model, recipe=recipe, plan=plan)


DEMO_CONVERTERS = {"bf16": convert_bf16, "nvfp4": convert_default,
                   "planned": convert_planned}


def prepare_config(convert_fn, model_cfg, train_cfg, device, ctx=None):
    """Build the model (same init for every config) and convert it: ``(model, seconds)``."""
    model = build_model(model_cfg, train_cfg.seed, device)
    start = time.perf_counter()
    model = convert_fn(model, dict(ctx or {}, device=device))
    return model, time.perf_counter() - start


def train_config(name, model, convert_seconds, corpus, train_cfg, device, label=None,
                 progress=True):
    """Train a prepared model; the result of ``train`` plus name, label, plan, share."""
    label = label or name
    result = train(model, corpus, train_cfg, device, label=label, progress=progress)
    plan = getattr(model, "lowprec_plan", None)
    result.update(name=name, label=label, convert_seconds=convert_seconds, plan=plan,
                  nvfp4_share=0.0 if plan is None else plan.summary()["nvfp4"])
    return result


def run_config(name, convert_fn, corpus, model_cfg, train_cfg, device, ctx=None,
               progress=True):
    """Build the model, convert it, train it."""
    model, seconds = prepare_config(convert_fn, model_cfg, train_cfg, device, ctx)
    return train_config(name, model, seconds, corpus, train_cfg, device, progress=progress)


def default_budget(nvfp4_share):
    """The NVFP4 FLOPs share of the default plan, rounded down to 0.1%: the planner then
    places the same amount of NVFP4 as the default rule, which makes the two comparable
    (rounding down keeps the budget reachable despite float error)."""
    return math.floor(nvfp4_share * 1000) / 1000


DEMO_CONFIGS = ("bf16", "nvfp4", "planned")


def run_demo(preset="cpu", steps=None, budget=None, seed=0, device=None, progress=True,
             log=None, configs=DEMO_CONFIGS, threads=None, on_start=None):
    """Train the demo's configurations (``configs``, a subset of ``DEMO_CONFIGS``).

    ``threads``: CPU intra-op threads (default ``CPU_THREADS``); ``on_start(threads)`` is
    called with the count in use before any work; ``log(text)`` takes the progress
    messages (default: ``LOGGER.info``, the ``lowprec.demo.train`` logger). Returns a dict: the
    configs of model and training, the budget, the corpus facts, the threads and backend
    used, and ``runs`` (name -> the dict of ``train`` plus ``plan``, a ``lowprec.Plan`` or None).
    """
    log = log or LOGGER.info
    unknown = sorted(set(configs) - set(DEMO_CONFIGS))
    if unknown:
        raise ValueError(f"unknown demo config(s) {unknown}; known: {DEMO_CONFIGS}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model_cfg, train_cfg = PRESETS[preset]
    changes = {"seed": seed}
    if steps is not None:
        changes.update(steps=steps, eval_every=min(train_cfg.eval_every, steps))
    train_cfg = dataclasses.replace(train_cfg, **changes)
    if budget is None:
        share = default_plan(find_layers(build_model(model_cfg, seed, "cpu"))).summary()["nvfp4"]
        budget = default_budget(share)
    budget = options.check_budget(budget)
    corpus = corpus_mod.load()
    ctx = {"budget": budget}
    start = time.perf_counter()
    runs = {}
    with cpu_threads(device, threads):
        used_threads = torch.get_num_threads()
        if on_start is not None:
            on_start(used_threads)
        # Every configuration is converted (the planner included) before any trains, so
        # a budget the model cannot reach fails at once, not after minutes of training.
        prepared = {}
        for name in configs:
            if name == "planned":
                log(f"planning at budget {budget} (NVFP4 share of linear FLOPs) on "
                    f"{train_cfg.calibration_batches} calibration batches ...")
                ctx["calibration"] = calibration_batches(corpus, model_cfg, train_cfg,
                                                         device)
            prepared[name] = prepare_config(DEMO_CONVERTERS[name], model_cfg, train_cfg,
                                            device, ctx)
        for name, (model, seconds) in prepared.items():
            label = high_precision_label(device) if name == "bf16" else name
            runs[name] = train_config(name, model, seconds, corpus, train_cfg, device,
                                      label=label, progress=progress)
    return {"preset": preset, "model_config": dataclasses.asdict(model_cfg),
            "train_config": dataclasses.asdict(train_cfg), "budget": budget,
            "corpus": corpus.describe(), "device_type": device.type,
            "threads": used_threads, "backend": auto_backend(device), "runs": runs,
            "seconds": time.perf_counter() - start}


def auto_backend(device):
    """The backend ``backend="auto"`` picks on ``device`` (first available in its order)."""
    for name in lowprec.backends.AUTO_ORDER.get(device.type, ("reference",)):
        if lowprec.available(name, device_type=device.type):
            return name
    return None
