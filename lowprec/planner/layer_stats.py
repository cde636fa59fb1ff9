r"""Per-layer sensitivity statistics for the precision planner (after SNIP, arXiv 2602.01410):
what one calibration batch adds to each layer's sums, and what the sums finalise into.
(The loop over batches and ranks is ``stats.collect_stats``.)

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

All statistics are sums over batches (and ranks) until ``finalize``: one row of
``FIELDS`` per layer, float64.
"""

import math
from dataclasses import dataclass, field

import torch

from lowprec.conv1d import linear_view, linear_weight
from lowprec.planner import gemm_error
from lowprec.planner.adam import adam_view, update_and_shifts

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


def _sq(t):
    return float(t.double().pow(2).sum())


def _dot(a, b):
    return float((a.double() * b.double()).sum())


def accumulate_clean(layer, row, hooks, recipe, seeds, optimizer):
    """Add one batch's clean-pass statistics of ``layer`` into ``row`` (float64 [F])."""
    row[COLUMN["batches"]] += 1
    weight = stats_weight(layer).detach().float()
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
                e = gemm_error.fprop(xs, w, p, recipe) - y
                ge[p] += _dot(gs, e)
                row[COLUMN[f"e2_{p}"]] += _sq(e)
                dx_q = gemm_error.dgrad(gs, w, p, recipe, seeds)
                row[COLUMN[f"dx_err2_{p}"]] += _sq(dx_q - dx)
                dw_err[p][index] += gemm_error.wgrad(gs, xs, p, recipe, seeds) - dw
        # The clean half of the Hutchinson difference <delta, G' - G>.
        row[COLUMN["hutch_num"]] -= _dot(hooks.delta(layer, c, call["g"]), call["g"])
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


def param(layer):
    """The Parameter whose statistics ``layer`` gathers."""
    return getattr(layer.module, layer.tensor) if layer.tensor else layer.module.weight


def stats_weight(layer):
    """The linear weight: ``[N, K]`` (a Linear or a Conv1D) or ``[E, N, K]`` (experts)."""
    return param(layer) if layer.tensor else linear_weight(layer.module)


def _accumulate_update(layer, row, optimizer, weight, dw_true, dw_err):
    """The AdamW update and its shift by each wgrad error (``adam``; the module docstring)."""
    adam = adam_view(optimizer, param(layer))
    if adam is None:
        return
    m = torch.zeros_like(weight) if adam.m is None else linear_view(layer.module, adam.m)
    v = torch.zeros_like(weight) if adam.v is None else linear_view(layer.module, adam.v)
    update, shifts = update_and_shifts(adam, m, v, dw_true, dw_err)
    row[COLUMN["upd2"]] += _sq(update)
    for p, shift in shifts.items():
        row[COLUMN[f"upd_err2_{p}"]] += _sq(shift)


def accumulate_noisy(layer, row):
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
        check_finite(raw[i], name, "after summing over batches and ranks")
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


def check_finite(row, name, where):
    """FloatingPointError naming the layer and the non-finite fields of its row."""
    bad = [f for f in FIELDS if not math.isfinite(float(row[COLUMN[f]]))]
    if bad:
        raise FloatingPointError(f"non-finite statistics for layer {name} {where}: "
                                 f"{', '.join(f'{f}={float(row[COLUMN[f]])}' for f in bad)} "
                                 f"(a NaN/Inf in its input, weight or output gradient?); "
                                 f"the planner cannot rank a layer it cannot measure")
