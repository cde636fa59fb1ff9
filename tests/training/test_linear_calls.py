"""How many quantize calls one Linear forward + backward makes, and of what.

Every quantize kernel the training layer launches goes through ``lowprec.backends.get``
(ops.py dispatches each call there), so recording the op names it is asked for counts
launches, whatever the backend. Under the default recipe (all NVFP4, 2-D weights, RHT,
SR) a step is:

* forward: X -> 1 ``quantize_row_col`` (rowwise + columnwise), W -> 1 ``quantize_weight_2d``;
* backward: dY -> 1 ``quantize_row_col`` (both copies, SR), W -> 1 ``quantize_weight_2d``
  (dgrad's W^T, recomputed rather than saved).

Mutations tried: quantizing X^T in a second call (test_default_recipe_call_counts fails);
quantizing and saving X^T although W needs no gradient
(test_no_wgrad_operand_when_weight_needs_no_grad fails).
"""

import pytest
import torch

from lowprec import backends
from lowprec.linear_layer import linear
from lowprec.recipe import Recipe

QUANTIZE_OPS = ("quantize_nvfp4", "quantize_row_col", "quantize_weight_2d", "quantize_fp8")


@pytest.fixture
def calls(monkeypatch):
    """(op, kwargs) of every quantize dispatched, in order."""
    recorded = []
    get = backends.get

    def recording_get(name, op, device):
        impl = get(name, op, device)
        if op not in QUANTIZE_OPS:
            return impl

        def call(*args, **kwargs):
            recorded.append((op, kwargs))
            return impl(*args, **kwargs)
        return call

    monkeypatch.setattr(backends, "get", recording_get)
    return recorded


def step(recipe, x_grad=True, w_grad=True, m=40, k=64, n=32):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=gen).requires_grad_(x_grad)
    w = torch.randn(n, k, generator=gen).requires_grad_(w_grad)
    return x, w, linear(x, w, recipe=recipe)


def test_default_recipe_call_counts(calls):
    _, _, y = step(Recipe())
    forward = [op for op, _ in calls]
    assert forward == ["quantize_row_col", "quantize_weight_2d"]
    x_call = calls[0][1]
    assert x_call["rowwise"] and x_call["columnwise"] and x_call["rht_signs"] is not None
    y.backward(torch.ones_like(y))
    backward = [op for op, _ in calls[2:]]
    assert sorted(backward) == ["quantize_row_col", "quantize_weight_2d"]
    dy_call = next(kw for op, kw in calls[2:] if op == "quantize_row_col")
    assert dy_call["rowwise"] and dy_call["columnwise"]
    assert dy_call["row_stochastic"] and dy_call["col_stochastic"]


def test_no_weight_2d_uses_the_fused_op_for_w_too(calls):
    _, _, y = step(Recipe(weight_2d=False))
    y.sum().backward()
    assert [op for op, _ in calls] == ["quantize_row_col"] * 4     # X, W | dY, W^T
    w_forward, w_backward = calls[1][1], calls[3][1]
    assert (w_forward["rowwise"], w_forward["columnwise"]) == (True, False)
    assert (w_backward["rowwise"], w_backward["columnwise"]) == (False, True)


def test_no_wgrad_operand_when_weight_needs_no_grad(calls):
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        x, w, y = step(Recipe(), w_grad=False)
    # X: fprop's rowwise copy only; nothing of X^T is made or kept
    assert [(op, kw.get("columnwise")) for op, kw in calls] == [
        ("quantize_row_col", False), ("quantize_weight_2d", False)]
    assert all(t.numel() == 0 for t in saved if t is not w and t.dtype != torch.int64)
    y.sum().backward()
    dy_call = calls[2][1]
    assert (dy_call["rowwise"], dy_call["columnwise"]) == (True, False)
    assert x.grad is not None and w.grad is None


def test_no_dgrad_operand_when_input_needs_no_grad(calls):
    _, w, y = step(Recipe(), x_grad=False)
    y.sum().backward()
    # backward: dY^T only, and no W^T
    assert [(op, kw.get("rowwise"), kw.get("columnwise")) for op, kw in calls[2:]] == [
        ("quantize_row_col", False, True)]
    assert w.grad is not None


def test_fp8_and_bf16_mix(calls):
    _, _, y = step(Recipe(fprop="fp8", dgrad="nvfp4", wgrad="bf16"))
    y.sum().backward()
    ops = [op for op, _ in calls]
    # forward: X and W in FP8; backward: dY rowwise, W^T (2-D)
    assert ops == ["quantize_fp8", "quantize_fp8", "quantize_row_col", "quantize_weight_2d"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_step_runs_no_reference_op(monkeypatch):
    """Every op a bf16 default-recipe step dispatches on CUDA comes from the cuda or
    triton backend, never from lowprec.reference."""
    import lowprec.backends.reference as reference_backend

    chosen = []
    get = backends.get

    def recording_get(name, op, device):
        impl = get(name, op, device)
        chosen.append((op, impl))
        return impl

    monkeypatch.setattr(backends, "get", recording_get)
    x = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(384, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    linear(x, w).sum().backward()
    reference_impls = {getattr(reference_backend, op, None) for op in backends.OPS}
    assert chosen and not [op for op, impl in chosen if impl in reference_impls]
