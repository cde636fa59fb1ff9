r"""Per-layer sensitivity statistics for the precision planner (after SNIP, arXiv 2602.01410).

For every candidate linear layer ``Y = X W^T (+ b)`` (``X [M, K]`` over the M tokens of a
batch, ``W [N, K]``) and each quantized precision ``p`` in {nvfp4, fp8}, on calibration
batches, with the model in high precision (a ``lowprec.Linear`` is recomputed by the
hook with ``F.linear`` so that the statistics do not depend on the current plan):

Loss divergence (fprop)
    ``E_p = Q_p(X) Q_p(W)^T - X W^T`` is the output error of the quantized fprop GEMM
    (``gemm_error.fprop``: X 1x16 RNE, W 16x16 when ``weight_2d``; FP8 per row) and
    ``G = dL/dY``. By a second-order Taylor expansion of the loss in the layer output,

        L(Y + E) - L(Y) ~= <G, E> + 1/2 E^T H_Y E,

    with ``H_Y`` the Hessian of the loss w.r.t. this layer's output. We report

        LD_p = |<G, E_p>| + 1/2 s ||E_p||^2

    per batch, averaged over batches, where ``s`` is the mean curvature of ``H_Y``
    (``tr(H_Y) / numel(Y)``), which replaces ``E^T H_Y E`` by ``s ||E||^2`` (exact when
    ``H_Y`` is a multiple of the identity, and the expectation over random error
    directions otherwise). The absolute value makes the first-order term a magnitude:
    its sign depends on the batch, and either sign moves training away from BF16.

Curvature estimate ``s`` (Hutchinson-style, one noise-injected pass)
    Per batch, a second forward/backward adds ``delta_l = sigma_l z_l`` to the output of
    every candidate layer ``l`` at once, where ``z_l`` are independent standard normal
    tensors (a private generator with a fixed seed) and
    ``sigma_l = noise_scale * rms(Y_l)``. With ``G'_l`` the output gradient of that pass,

        s_l = sum_batches <delta_l, G'_l - G_l> / sum_batches ||delta_l||^2,

    clamped at 0. Why: ``G' - G = H delta + O(|delta|^2)`` (H the Hessian of L in all
    injected outputs), so ``E[<delta_l, (H delta)_l>] = sigma_l^2 tr(H_ll)``: the
    cross-layer blocks ``H_lm`` drop out because ``z_l`` and ``z_m`` are independent
    with zero mean, and ``E ||delta_l||^2 = sigma_l^2 numel(Y_l)``. This is Hutchinson's
    trace estimator with one Gaussian probe per batch, computed by a finite difference
    of gradients (no double backward). For a quadratic loss it is exact up to the probe's
    variance; for a diagonal ``H_ll`` it is a ``z^2``-weighted mean of its diagonal, so it
    always lies between the smallest and largest curvature. The clamp: one noisy probe
    can come out negative where the loss is nearly flat, and a negative term would claim
    that quantizing lowers the loss. Dropout and other randomness see identical draws in
    both passes (the RNG state is restored), so ``G' - G`` measures only the noise.

Weight divergence (wgrad), through the optimizer
    ``D_p = Q_p(G)^T Q_p(X) - G^T X`` is the wgrad error (``gemm_error.wgrad``: NVFP4
    with RHT on both operands, SR on ``G^T``, fixed seed; FP8 per row). With an Adam or
    AdamW optimizer whose state holds moments ``m, v`` at step ``t`` for this weight,
    the update the optimizer would take with this batch's gradient ``g = G^T X`` is
    ``U = lr m_hat / (sqrt(v_hat) + eps)`` with ``m' = b1 m + (1-b1) g``,
    ``v' = b2 v + (1-b2) g^2``, hats the bias corrections at ``t+1``; the quantization
    error enters ``m'`` as ``(1-b1) D_p``, so the update moves by

        dU_p = lr (1-b1) D_p / ((1-b1^(t+1)) (sqrt(v_hat) + eps))

    and ``WD_p = ||dU_p||_F / ||U||_F`` (both summed over batches before the ratio; lr
    and the bias correction cancel in it). Weight decay is left out of ``U``: it does
    not depend on the gradient. A weight without optimizer state yet uses ``m = v = 0``.
    Without an optimizer (or one that is not Adam-like) the fallback is the relative
    gradient error ``WD_p = ||D_p||_F / ||G^T X||_F``, which is the relative update
    error of SGD with or without momentum.

dgrad error
    ``DX_p = ||Q_p(G) Q_p(W^T)^T - G W||_F / ||G W||_F`` (NVFP4: G 1x16 with SR, W^T the
    transposed 2-D copy): how wrong the gradient handed to the layers below is.

Experts (``lowprec.moe``): each projection of a group of experts is one layer whose
GEMMs are the per-expert products ``X_e W_e^T`` over each expert's routed rows; every
statistic above sums over the experts (``<G, E>`` over all rows, ``||D||`` over the
whole ``[E, N, K]`` weight), so the group gets one LD, WD and DX, and its token count is
the routed rows (T x top_k). A Conv1D is measured as the linear layer ``W^T``.

Cost: per calibration batch one clean and one noise-injected forward/backward. Both use
``torch.autograd.grad`` on the layer outputs, so parameter ``.grad`` fields, the
optimizer and the caller's RNG state are untouched. All statistics are sums over batches
(and ranks: ``all_reduce_sum``) until ``finalize``, so a distributed run gets the same
numbers as one process that saw every rank's batches.
"""

import math
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from lowprec.conv1d import linear_view, linear_weight
from lowprec.moe import experts_adapter, experts_forward
from lowprec.planner import gemm_error
from lowprec.planner.distributed import agree, all_reduce_sum, resolve_group
from lowprec.progress import Progress

QUANTIZED = gemm_error.QUANTIZED
FIELDS = (
    "batches", "tokens",
    "ge_nvfp4", "ge_fp8", "e2_nvfp4", "e2_fp8", "y2",
    "dx_err2_nvfp4", "dx_err2_fp8", "dx2",
    "dw_err2_nvfp4", "dw_err2_fp8", "dw2",
    "upd_err2_nvfp4", "upd_err2_fp8", "upd2",
    "hutch_num", "hutch_den",
)
COLUMN = {name: i for i, name in enumerate(FIELDS)}
DEFAULT_NOISE_SCALE = 0.05
DEFAULT_SEED = 0x5EED


@dataclass
class LayerStats:
    """Finalised statistics of one layer; metric dicts map nvfp4/fp8 -> value (BF16 is 0).

    ``ld``: loss divergence (loss units per batch). ``wd``: weight divergence (relative
    update error). ``dx``: relative dgrad error. ``rel``: relative error of each GEMM's
    output (``{"fprop": {...}, "dgrad": {...}, "wgrad": {...}}``), what a plain
    "minimum quantization error" heuristic would use. Values are None for layers whose
    quantized statistics were skipped (forced to BF16). ``tokens``: mean tokens per batch.
    """

    name: str
    shape: tuple
    tokens: float
    batches: int
    curvature: float = None
    ld: dict = field(default_factory=dict)
    wd: dict = field(default_factory=dict)
    dx: dict = field(default_factory=dict)
    rel: dict = field(default_factory=dict)
    wd_kind: str = "gradient"

    def to_dict(self):
        """JSON-ready summary for ``LayerPlan.stats``."""
        out = {"ld": dict(self.ld), "wd": dict(self.wd), "dx": dict(self.dx),
               "rel": {g: dict(v) for g, v in self.rel.items()},
               "curvature": self.curvature, "wd_kind": self.wd_kind,
               "tokens": self.tokens, "batches": self.batches}
        return out


@dataclass
class CollectedStats:
    layers: dict
    seconds: float
    batches: int
    world_size: int = 1
    raw: torch.Tensor = None


def default_loss(model, batch):
    """The loss ``make_plan`` uses when no ``loss_fn`` is given: ``model``'s own output.

    The batch is unpacked into the model's arguments: a dict as ``model(**batch)``, a
    tuple or list as ``model(*batch)`` (so an ``(x, y)`` batch calls ``model(x, y)``), a
    tensor or anything else as ``model(batch)``. The model must then return the loss:
    a scalar tensor, a tuple/list starting with one, a dict with ``"loss"``, or an
    object with ``.loss`` (Hugging Face style). A model that returns logits needs a
    ``loss_fn(model, batch) -> scalar``, e.g. for ``(x, y)`` batches
    ``loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1])``.
    """
    if isinstance(batch, dict):
        out = model(**batch)
    elif isinstance(batch, (tuple, list)):
        out = model(*batch)
    else:
        out = model(batch)
    loss = out
    if isinstance(out, dict):
        loss = out.get("loss")
    elif isinstance(out, (tuple, list)) and out:
        loss = out[0]
    elif not isinstance(out, torch.Tensor):
        loss = getattr(out, "loss", None)
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        raise TypeError(f"the model's output is not a loss: {_describe(out)}; pass "
                        f"{example_loss_fn(batch)}")
    return loss.reshape(())


def _describe(value):
    """A short description of what a loss function returned, for error messages."""
    if isinstance(value, torch.Tensor):
        return (f"a {value.dtype} tensor of shape {tuple(value.shape)}"
                + ("" if value.numel() != 1 else f" ({value.item():.6g})"))
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: " \
               f"({', '.join(_describe(v) for v in value[:3])}{', ...' if len(value) > 3 else ''})"
    return f"{type(value).__name__} {value!r}"[:120]


def example_loss_fn(batch):
    """A ``loss_fn`` that suits ``batch``'s structure, to show in error messages."""
    if isinstance(batch, dict):
        return "loss_fn=lambda m, b: m(**b).loss  (or m(**b)['loss'])"
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return "loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1])"
    if isinstance(batch, torch.Tensor) and batch.dim() == 2 and not batch.is_floating_point():
        return ("loss_fn=lambda m, b: F.cross_entropy(m(b[:, :-1]).flatten(0, 1), "
                "b[:, 1:].flatten())  (next-token prediction)")
    return "loss_fn=lambda m, b: <a scalar loss tensor computed by m from b>"


def _loss(loss_fn, model, batch, given):
    """``loss_fn(model, batch)`` as a 0-d tensor, or an error naming ``loss_fn``."""
    who = "loss_fn" if given else "loss_fn (omitted: the default, stats.default_loss)"
    shape = "; ".join(["loss_fn is called as loss_fn(model, batch) and must return a "
                       "scalar tensor that requires grad",
                       f"for this batch ({_describe(batch)}) try {example_loss_fn(batch)}"])
    try:
        loss = loss_fn(model, batch)
    except TypeError as err:
        raise TypeError(f"{who} failed: {err}; {shape}") from err
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        raise TypeError(f"{who} returned {_describe(loss)}, not a scalar loss; {shape}")
    if not loss.requires_grad:
        raise ValueError(f"{who} returned a loss that does not require grad "
                         f"({_describe(loss)}): the planner differentiates it, so it must "
                         f"be computed from the model's output with autograd enabled")
    return loss.reshape(())


def _mix(*parts):
    """A deterministic 63-bit seed from integers (for the noise generators)."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + int(part)) % (1 << 63)
    return value


def _rms(y):
    return float(y.detach().float().pow(2).mean().sqrt()) if y.numel() else 0.0


def _noise(shape, sigma, seed, device, dtype):
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    z = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    return (z * sigma).to(dtype)


@dataclass
class _Layer:
    index: int
    name: str
    module: nn.Module
    compute: bool                     # False: forced to BF16, count tokens only
    nvfp4_ok: bool
    shape: tuple                      # (N, K) of the linear weight (of one expert)
    tensor: str = None                # experts: the projection's Parameter name
    calls: list = field(default_factory=list)     # per forward call: dict
    sigmas: list = field(default_factory=list)    # clean-pass sigma of each call


class _Hooks:
    """Forward hooks that record each call's input and (tapped) output."""

    def __init__(self, layers, noise_scale, seed):
        self.layers = layers
        self.noise_scale = noise_scale
        self.seed = seed
        self.mode = "clean"
        self.batch = 0
        self.handles = []

    def __enter__(self):
        experts = {}
        for layer in self.layers:
            if layer.tensor is None:
                self.handles.append(layer.module.register_forward_hook(self._hook(layer)))
            else:
                experts.setdefault(id(layer.module), (layer.module, {}))[1][layer.tensor] = layer
        for module, by_tensor in experts.values():
            self.handles.append(module.register_forward_hook(
                self._experts_hook(by_tensor), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []
        return False

    def start(self, mode, batch):
        self.mode, self.batch = mode, batch
        for layer in self.layers:
            layer.calls = []
            if mode == "clean":
                layer.sigmas = []

    def _record(self, layer, x, output, tokens, counts=None):
        """Record one call of ``layer``; returns the output to go on with (the noise
        pass adds the probe). ``counts``: rows per expert, for experts."""
        if not layer.compute:                 # forced to BF16: only its tokens count
            layer.calls.append({"tokens": tokens})
            return output
        call = len(layer.calls)
        record = {"x": x.detach(), "tokens": tokens, "counts": counts}
        if self.mode == "clean":
            sigma = self.noise_scale * _rms(output)
            layer.sigmas.append(sigma)
            record["tap"] = output
        else:
            if call >= len(layer.sigmas):
                raise RuntimeError(f"layer {layer.name} ran more often in the noise pass "
                                   f"than in the clean pass; the model's forward must "
                                   f"be deterministic for the planner's statistics")
            delta = _noise(output.shape, layer.sigmas[call],
                           _mix(self.seed, self.batch, layer.index, call),
                           output.device, output.dtype)
            output = output + delta
            record["tap"] = output
            record["delta"] = delta
        layer.calls.append(record)
        return output

    def _hook(self, layer):
        def hook(module, inputs, output):
            x = inputs[0]
            weight = linear_weight(module)
            if layer.compute and type(module) is not nn.Linear:
                # A lowprec.Linear (or other subclass) runs its current plan; statistics
                # are about the high-precision layer, so recompute it in full precision.
                output = F.linear(x, weight, module.bias)
            return self._record(layer, x, output, x.numel() // weight.shape[1])
        return hook

    def _experts_hook(self, by_tensor):
        """Recompute an experts layer in high precision, recording each projection.

        A projection is one call over all T x top_k routed rows (sorted by expert), so
        its output has the same shape in the clean and the noise pass even if the probe
        changes the routing downstream.
        """
        def hook(module, args, kwargs, output):
            names = ("hidden_states", "top_k_index", "top_k_weights")
            inputs = list(args) + [kwargs[n] for n in names[len(args):] if n in kwargs]

            def project(tensor, x, sizes):
                weight = getattr(module, tensor)
                y = torch.cat([F.linear(rows, w)
                               for rows, w in zip(x.split(sizes), weight.unbind(0))])
                return self._record(by_tensor[tensor], x, y, x.shape[0], sizes)
            return experts_forward(module, *inputs[:3], project)
        return hook


def _rng_state(devices):
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng_state(state, devices):
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for d, s in zip(devices, cuda):
        torch.cuda.set_rng_state(s, d)


def _output_grads(loss, layers):
    taps = [(layer, call) for layer in layers for call in layer.calls if "tap" in call]
    for layer, call in taps:
        if not call["tap"].requires_grad:
            raise ValueError(f"the output of layer {layer.name} does not require grad (frozen "
                             f"weights and input?); leave it out of the candidates")
    if not taps:
        return
    grads = torch.autograd.grad(loss, [call["tap"] for _, call in taps], allow_unused=True)
    for (layer, call), grad in zip(taps, grads):
        call["g"] = torch.zeros_like(call["tap"]) if grad is None else grad.detach()
        del call["tap"]                  # drop the graph reference early


def _adam_view(optimizer, weight):
    """``(lr, beta1, beta2, eps, m, v, step)`` for an Adam-like optimizer, else None."""
    if optimizer is None:
        return None
    for group in optimizer.param_groups:
        if any(p is weight for p in group["params"]):
            betas = group.get("betas")
            if betas is None or "eps" not in group:
                return None
            state = optimizer.state.get(weight, {})
            m, v = state.get("exp_avg"), state.get("exp_avg_sq")
            step = state.get("step", 0)
            step = int(step.item()) if isinstance(step, torch.Tensor) else int(step)
            lr = group["lr"]
            lr = float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)
            return (lr, float(betas[0]), float(betas[1]), float(group["eps"]),
                    None if m is None else m.detach().float(),
                    None if v is None else v.detach().float(), step)
    return None


def _sq(t):
    return float(t.double().pow(2).sum())


def _dot(a, b):
    return float((a.double() * b.double()).sum())



def _delta(hooks, layer, call_index, like):
    """The noise the noise pass adds to call ``call_index`` of ``layer`` (same bits)."""
    return _noise(like.shape, layer.sigmas[call_index],
                  _mix(hooks.seed, hooks.batch, layer.index, call_index),
                  like.device, like.dtype)


def _accumulate_clean(layer, row, hooks, cfg, seeds, optimizer):
    """Add one batch's clean-pass statistics of ``layer`` into ``row`` (float64 [F])."""
    row[COLUMN["batches"]] += 1
    weight = _stats_weight(layer).detach().float()
    n, k = weight.shape[-2:]
    for call in layer.calls:
        row[COLUMN["tokens"]] += call["tokens"]
    if not layer.compute:
        return
    precisions = [p for p in QUANTIZED if p != "nvfp4" or layer.nvfp4_ok]
    ge = {p: 0.0 for p in precisions}
    dw_true = torch.zeros_like(weight)
    dw_err = {p: torch.zeros_like(weight) for p in precisions}
    for c, call in enumerate(layer.calls):
        x = call["x"].reshape(-1, k).float()
        g = call["g"].reshape(-1, n).float()
        for index, xs, gs, w in _pieces(weight, call["counts"], x, g):
            y = xs @ w.t()
            dx = gs @ w
            dw = gs.t() @ xs
            dw_true[index] += dw
            row[COLUMN["y2"]] += _sq(y)
            row[COLUMN["dx2"]] += _sq(dx)
            for p in precisions:
                e = gemm_error.fprop(xs, w, p, cfg) - y
                ge[p] += _dot(gs, e)
                row[COLUMN[f"e2_{p}"]] += _sq(e)
                row[COLUMN[f"dx_err2_{p}"]] += _sq(gemm_error.dgrad(gs, w, p, cfg, seeds) - dx)
                dw_err[p][index] += gemm_error.wgrad(gs, xs, p, cfg, seeds) - dw
        # The clean half of the Hutchinson difference <delta, G' - G>.
        row[COLUMN["hutch_num"]] -= _dot(_delta(hooks, layer, c, call["g"]), call["g"])
    for p in precisions:
        # |<G, E>| of the whole batch: the calls of one layer share one precision.
        row[COLUMN[f"ge_{p}"]] += abs(ge[p])
        row[COLUMN[f"dw_err2_{p}"]] += _sq(dw_err[p])
    row[COLUMN["dw2"]] += _sq(dw_true)
    _accumulate_update(layer, row, optimizer, weight, dw_true, dw_err)


def _pieces(weight, counts, x, g):
    """``(index into weight, x rows, g rows, weight)`` of each GEMM of one call: the whole
    call for a linear layer; each expert with rows for experts (``counts`` per expert)."""
    if counts is None:
        yield ..., x, g, weight
        return
    for e, (xs, gs) in enumerate(zip(x.split(counts), g.split(counts))):
        if xs.shape[0]:
            yield e, xs, gs, weight[e]


def _param(layer):
    """The Parameter whose statistics ``layer`` gathers."""
    return getattr(layer.module, layer.tensor) if layer.tensor else layer.module.weight


def _stats_weight(layer):
    """The linear weight: ``[N, K]`` (a Linear or a Conv1D) or ``[E, N, K]`` (experts)."""
    return _param(layer) if layer.tensor else linear_weight(layer.module)


def _expert_tensor(name, module):
    """The projection a candidate names when ``module`` holds experts, else None."""
    adapter = experts_adapter(module)
    if adapter is None:
        return None
    tensor = name.rpartition(".")[2]
    if tensor not in adapter.tensors:
        raise ValueError(f"candidate {name!r} holds experts; its name must end in one of "
                         f"{adapter.tensors}")
    return tensor


def _accumulate_update(layer, row, optimizer, weight, dw_true, dw_err):
    """The AdamW update and its shift by each wgrad error (see the module docstring)."""
    adam = _adam_view(optimizer, _param(layer))
    if adam is None:
        return
    lr, b1, b2, eps, m, v, step = adam
    m = torch.zeros_like(weight) if m is None else linear_view(layer.module, m)
    v = torch.zeros_like(weight) if v is None else linear_view(layer.module, v)
    t = step + 1
    denom = ((b2 * v + (1 - b2) * dw_true.square()) / (1 - b2 ** t)).sqrt() + eps
    row[COLUMN["upd2"]] += _sq(lr * ((b1 * m + (1 - b1) * dw_true) / (1 - b1 ** t)) / denom)
    for p, err in dw_err.items():
        row[COLUMN[f"upd_err2_{p}"]] += _sq(lr * (1 - b1) * err / ((1 - b1 ** t) * denom))


def _accumulate_noisy(layer, row):
    if not layer.compute:
        return
    for call in layer.calls:
        delta = call["delta"]
        row[COLUMN["hutch_num"]] += _dot(delta, call["g"])
        row[COLUMN["hutch_den"]] += _sq(delta)


def _ratio(num, den):
    return math.sqrt(num / den) if den > 0 else 0.0


def finalize(raw, layers_info, uses_optimizer):
    """Turn summed raw statistics ``[L, F]`` into ``{name: LayerStats}``.

    ``layers_info``: list of ``(name, (N, K), compute, nvfp4_ok)`` in row order.
    ``uses_optimizer``: per row, whether Adam statistics were gathered.
    """
    out = {}
    raw = raw.double()
    for i, (name, shape, compute, nvfp4_ok) in enumerate(layers_info):
        _check_finite(raw[i], name, "after summing over batches and ranks")
        r = {f: float(raw[i, COLUMN[f]]) for f in FIELDS}
        batches = int(round(r["batches"]))
        stats = LayerStats(name=name, shape=tuple(shape), batches=batches,
                           tokens=r["tokens"] / batches if batches else 0.0)
        if compute and batches:
            s = max(0.0, r["hutch_num"] / r["hutch_den"]) if r["hutch_den"] > 0 else 0.0
            stats.curvature = s
            adam = uses_optimizer[i] and r["upd2"] > 0
            stats.wd_kind = "adamw" if adam else "gradient"
            rel = {"fprop": {}, "dgrad": {}, "wgrad": {}}
            for p in QUANTIZED:
                if p == "nvfp4" and not nvfp4_ok:
                    continue
                stats.ld[p] = (r[f"ge_{p}"] + 0.5 * s * r[f"e2_{p}"]) / batches
                stats.dx[p] = _ratio(r[f"dx_err2_{p}"], r["dx2"])
                stats.wd[p] = (_ratio(r[f"upd_err2_{p}"], r["upd2"]) if adam
                               else _ratio(r[f"dw_err2_{p}"], r["dw2"]))
                rel["fprop"][p] = _ratio(r[f"e2_{p}"], r["y2"])
                rel["dgrad"][p] = stats.dx[p]
                rel["wgrad"][p] = _ratio(r[f"dw_err2_{p}"], r["dw2"])
            stats.rel = rel
        out[name] = stats
    return out


_END = object()


def _one_batch(model, batch, index, layers, raw, hooks, devices, cfg, seeds, optimizer,
               loss_fn, given):
    """Both passes of one calibration batch, added into ``raw``; non-finite values raise."""
    state = _rng_state(devices)
    hooks.start("clean", index)
    loss = _loss(loss_fn, model, batch, given)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss_fn returned a non-finite loss ({loss.item()}) on "
                                 f"calibration batch {index}; no layer's statistics can be "
                                 f"measured on it (leave the batch out or fix the model)")
    _output_grads(loss, layers)
    for layer in layers:
        _accumulate_clean(layer, raw[layer.index], hooks, cfg, seeds, optimizer)
    _set_rng_state(state, devices)       # same dropout masks in the noise pass
    hooks.start("noisy", index)
    _output_grads(_loss(loss_fn, model, batch, given), layers)
    for layer in layers:
        _accumulate_noisy(layer, raw[layer.index])
        layer.calls = []
        _check_finite(raw[layer.index], layer.name, f"on calibration batch {index}")


def _check_finite(row, name, where):
    """FloatingPointError naming the layer and the non-finite fields of its row."""
    bad = [f for f in FIELDS if not math.isfinite(float(row[COLUMN[f]]))]
    if bad:
        raise FloatingPointError(f"non-finite statistics for layer {name} {where}: "
                                 f"{', '.join(f'{f}={float(row[COLUMN[f]])}' for f in bad)} "
                                 f"(a NaN/Inf in its input, weight or output gradient?); "
                                 f"the planner cannot rank a layer it cannot measure")


def _iterate(calibration, num_batches):
    if calibration is None:
        raise ValueError("the planner needs calibration batches (calibration=...); got None")
    if callable(calibration) and not hasattr(calibration, "__iter__"):
        calibration = calibration()
    try:
        total = len(calibration)
    except TypeError:
        total = None
    if num_batches is not None:
        total = num_batches if total is None else min(total, num_batches)
    return calibration, total


def collect_stats(model, candidates, calibration, *, loss_fn=None, optimizer=None,
                  recipe=None, num_batches=None, noise_scale=DEFAULT_NOISE_SCALE,
                  seed=DEFAULT_SEED, progress=None, process_group="auto"):
    """Gather LD / WD / DX statistics of ``candidates`` on ``calibration`` batches.

    Args:
        model: the ``nn.Module`` (plain ``nn.Linear`` or ``lowprec.Linear`` layers).
        candidates: list of ``(name, module, forced_reason_or_None)``: an ``nn.Linear``
            or Conv1D (either's lowprec form), or a module holding experts with ``name``
            ending in the projection (``...experts.gate_up_proj``); forced layers are
            only counted (tokens), not measured.
        calibration: a finite iterable of batches (or a zero-argument callable returning
            one); an endless stream needs ``num_batches``.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor`` (it must run ``model`` and
            be differentiable); default ``default_loss`` (the model's own output, see
            there: ``(x, y)`` batches of a model returning logits need a ``loss_fn``).
        optimizer: an Adam/AdamW optimizer holding the layers' weights, for WD through
            its moments; None for the gradient-norm fallback.
        recipe: the ``lowprec.Recipe`` whose quantizer switches to emulate.
        num_batches: use at most this many batches.
        noise_scale: relative size of the curvature probe, ``sigma = noise_scale * rms(Y)``.
        seed: fixes the probe noise and the stochastic-rounding words.
        progress: progress bar on stderr (None: only on a terminal).
        process_group: ``"auto"`` (the default group when torch.distributed runs with
            more than one rank), a group, or None; statistics are summed over its ranks.

    Returns:
        CollectedStats with ``layers`` = ``{name: LayerStats}`` in candidate order.

    Raises:
        TypeError / ValueError naming ``loss_fn``: it failed on the batch's structure or
        returned no differentiable scalar (the message shows a ``loss_fn`` that suits
        the batch). FloatingPointError: a non-finite loss or statistic, naming the
        batch (and the layer). In a distributed run an error on any rank is raised on
        every rank after that batch, prefixed by the failing rank.
    """
    cfg = recipe
    group, rank, world = resolve_group(process_group)
    layers = []
    for index, (name, module, forced) in enumerate(candidates):
        tensor = _expert_tensor(name, module)
        n, k = (getattr(module, tensor) if tensor else linear_weight(module)).shape[-2:]
        layers.append(_Layer(index=index, name=name, module=module, compute=forced is None,
                             nvfp4_ok=gemm_error.nvfp4_shape_problem(n, k) is None,
                             shape=(n, k), tensor=tensor))
    raw = torch.zeros(len(layers), len(FIELDS), dtype=torch.float64)
    seeds = gemm_error.SeedStream(_mix(seed, rank))
    batches, total = _iterate(calibration, num_batches)
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
    start = time.perf_counter()
    used = 0
    iterator = None
    show = sys.stderr.isatty() if progress is None else bool(progress)
    with torch.random.fork_rng(devices=devices), \
            _Hooks(layers, noise_scale, _mix(seed, rank)) as hooks, \
            Progress("lowprec planner: statistics", total, enabled=show) as bar:
        while True:
            # Every rank takes part in each round, also after its own batches ran out,
            # so that an error on one rank reaches all of them (distributed.agree).
            active, failure = False, None
            try:
                iterator = iter(batches) if iterator is None else iterator
                batch = next(iterator, _END) if num_batches is None or used < num_batches \
                    else _END
                if batch is not _END:
                    active = True
                    _one_batch(model, batch, used, layers, raw, hooks, devices, cfg, seeds,
                               optimizer, loss_fn or default_loss, loss_fn is not None)
                    used += 1
                    bar.update(used)
            except Exception as err:              # noqa: BLE001  (handed to agree)
                failure = err
            if not agree(active, failure, group):
                break
    raw = all_reduce_sum(raw, group)
    total_batches = int(all_reduce_sum(torch.tensor([float(used)]), group)[0])
    if total_batches == 0:
        raise ValueError("calibration gave no batches (on any rank); the planner needs at "
                         "least one")
    if not any(raw[layer.index, COLUMN["tokens"]] > 0 for layer in layers):
        raise ValueError(f"loss_fn(model, batch) ran none of the {len(layers)} candidate "
                         f"layers on the calibration batches; it must compute the loss "
                         f"with the model (loss_fn={loss_fn!r})")
    uses_optimizer = [_adam_view(optimizer, _param(layer)) is not None for layer in layers]
    info = [(layer.name, layer.shape, layer.compute, layer.nvfp4_ok) for layer in layers]
    return CollectedStats(layers=finalize(raw, info, uses_optimizer),
                          seconds=time.perf_counter() - start, batches=total_batches,
                          world_size=world, raw=raw)
