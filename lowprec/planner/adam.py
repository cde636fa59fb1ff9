"""Adam/AdamW arithmetic for the weight divergence: the update the optimizer would take
with a batch's gradient, and how far each wgrad error moves it.

With moments ``m, v`` at step ``t`` and this batch's gradient ``g``, the update is
``U = lr m_hat / (sqrt(v_hat) + eps)`` with ``m' = b1 m + (1-b1) g``,
``v' = b2 v + (1-b2) g^2`` and the bias corrections at ``t+1``; a wgrad error ``D``
enters ``m'`` as ``(1-b1) D``, so it moves the update by
``lr (1-b1) D / ((1-b1^(t+1)) (sqrt(v_hat) + eps))``. Weight decay is left out: it does
not depend on the gradient.
"""

from typing import NamedTuple

import torch


class AdamView(NamedTuple):
    """What the update arithmetic needs of one weight's Adam-like optimizer."""
    lr: float
    beta1: float
    beta2: float
    eps: float
    m: torch.Tensor | None        # exp_avg (FP32), None before the first step
    v: torch.Tensor | None        # exp_avg_sq
    step: int


def adam_view(optimizer, weight):
    """The ``AdamView`` of ``weight`` in an Adam-like ``optimizer``, else None (no
    optimizer, the weight not in it, or no ``betas``/``eps``: not Adam-like)."""
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
            return AdamView(lr, float(betas[0]), float(betas[1]), float(group["eps"]),
                            None if m is None else m.detach().float(),
                            None if v is None else v.detach().float(), step)
    return None


def update_and_shifts(adam, m, v, grad, errors):
    """``(U, {p: dU_p})``: the update with gradient ``grad`` and its shift by each error.

    ``m``, ``v``: the moments laid out like ``grad`` (zeros before the first step);
    ``errors``: ``{precision: wgrad error D_p}``.
    """
    t = adam.step + 1
    b1, b2 = adam.beta1, adam.beta2
    denom = ((b2 * v + (1 - b2) * grad.square()) / (1 - b2 ** t)).sqrt() + adam.eps
    update = adam.lr * ((b1 * m + (1 - b1) * grad) / (1 - b1 ** t)) / denom
    shifts = {p: adam.lr * (1 - b1) * err / ((1 - b1 ** t) * denom)
              for p, err in errors.items()}
    return update, shifts
