"""How many quantize calls one Linear forward + backward makes, and of what.

The training layer runs every kernel through its device's kernel table
(``lowprec.linear_layer.kernel_table``), so the ``kernel_calls`` fixture
(tests/training/conftest.py) sees each launch of a quantize op, whatever the backend.
Under the default recipe (all NVFP4, 2-D weights, RHT, SR) a step is:

* forward: X -> 1 ``quantize_row_col`` (rowwise + columnwise), W -> 1
  ``quantize_weight_2d`` making fprop's W and dgrad's W^T from one read;
* backward: dY -> 1 ``quantize_row_col`` (both copies, SR); dgrad reuses the forward's
  W^T (W cannot change in between: autograd refuses a backward after an in-place
  change of a saved tensor).

Mutations tried: quantizing X^T in a second call (test_default_recipe_call_counts fails);
quantizing and saving X^T although W needs no gradient
(test_no_wgrad_operand_when_weight_needs_no_grad fails); quantizing W^T again in the
backward (test_default_recipe_call_counts fails).
"""

import pytest
import torch

from lowprec import backends
from lowprec.linear_layer import linear
from lowprec.recipe import Recipe


def step(recipe, x_grad=True, w_grad=True, m=40, k=64, n=32):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=gen).requires_grad_(x_grad)
    w = torch.randn(n, k, generator=gen).requires_grad_(w_grad)
    return x, w, linear(x, w, recipe=recipe)


def ops_of(calls):
    return [op for op, _, _ in calls]


def test_default_recipe_call_counts(kernel_calls):
    _, _, y = step(Recipe())
    assert ops_of(kernel_calls) == ["quantize_row_col", "quantize_weight_2d"]
    x_call, w_call = kernel_calls[0][1], kernel_calls[1][1]
    assert x_call["rowwise"] and x_call["columnwise"] and x_call["rht_signs"] is not None
    assert w_call["columnwise"]                       # dgrad's W^T, made here
    y.backward(torch.ones_like(y))
    assert ops_of(kernel_calls[2:]) == ["quantize_row_col"]
    dy_call = kernel_calls[2][1]
    assert dy_call["rowwise"] and dy_call["columnwise"]
    assert dy_call["row_stochastic"] and dy_call["col_stochastic"]


def test_no_weight_2d_uses_the_fused_op_for_w_too(kernel_calls):
    _, _, y = step(Recipe(weight_2d=False))
    y.sum().backward()
    assert ops_of(kernel_calls) == ["quantize_row_col"] * 3     # X, W and W^T | dY
    w_call = kernel_calls[1][1]
    assert (w_call["rowwise"], w_call["columnwise"], w_call["rht_signs"]) == (True, True, None)


def test_no_wgrad_operand_when_weight_needs_no_grad(kernel_calls):
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        x, w, y = step(Recipe(), w_grad=False)
    # X: fprop's rowwise copy only; nothing of X^T is made or kept
    assert [(op, kw["columnwise"]) for op, kw, _ in kernel_calls] == [
        ("quantize_row_col", False), ("quantize_weight_2d", True)]
    assert [t for t in saved if t is not w] == []
    y.sum().backward()
    dy_call = kernel_calls[2][1]
    assert (dy_call["rowwise"], dy_call["columnwise"]) == (True, False)
    assert x.grad is not None and w.grad is None


def test_no_dgrad_operand_when_input_needs_no_grad(kernel_calls):
    _, w, y = step(Recipe(), x_grad=False)
    # forward: no W^T
    assert kernel_calls[1][0] == "quantize_weight_2d" and not kernel_calls[1][1]["columnwise"]
    y.sum().backward()
    # backward: dY^T only
    assert [(op, kw["rowwise"], kw["columnwise"]) for op, kw, _ in kernel_calls[2:]] == [
        ("quantize_row_col", False, True)]
    assert w.grad is not None


def test_fp8_and_bf16_mix(kernel_calls):
    _, _, y = step(Recipe(fprop="fp8", dgrad="nvfp4", wgrad="bf16"))
    assert ops_of(kernel_calls) == ["quantize_fp8", "quantize_weight_2d", "quantize_fp8"]
    y.sum().backward()
    # forward: X in FP8, W^T (2-D) for dgrad and W in FP8; backward: dY rowwise
    assert ops_of(kernel_calls[3:]) == ["quantize_row_col"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_step_runs_no_reference_op():
    """Every op of the kernel table a CUDA step runs comes from the cuda or triton
    backend, never from lowprec.reference."""
    import lowprec.backends.reference as reference_backend

    x = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(384, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    linear(x, w).sum().backward()
    table = backends.kernel_table(x.device)
    reference_impls = {getattr(reference_backend, op, None) for op in backends.OPS}
    assert not [op for op in backends.OPS if getattr(table, op) in reference_impls]
