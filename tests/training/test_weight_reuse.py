"""``lowprec.reusing_weight_copies``: each weight quantized once for several micro-batches,
with the bits of quantizing it every time."""

import pytest
import torch
from torch import nn

import lowprec
from lowprec import launch_trace
from lowprec.conv1d import Conv1D
from lowprec.linear_layer import WeightCopies
from lowprec.recipe import Recipe


class GPT2Conv1D(nn.Module):
    """transformers' Conv1D layout (weight [nx, nf]), written here."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.randn(nx, nf) / 8)
        self.bias = nn.Parameter(torch.zeros(nf))


def model(kind, recipe):
    torch.manual_seed(0)
    if kind == "linear":
        layer = lowprec.Linear(64, 48, recipe=recipe)
    else:
        layer = Conv1D(GPT2Conv1D(48, 64), recipe)
    layer.lowprec_name = "reuse.layer"
    return layer


def accumulate(layer, micro_batches, reuse):
    """Gradients of the layer's parameters over the micro-batches (one step)."""
    torch.manual_seed(1)
    context = lowprec.reusing_weight_copies(layer) if reuse else _nothing()
    with context:
        for x, g in micro_batches:
            x = x.clone().requires_grad_()
            layer(x).backward(g)
    return layer.weight.grad, layer.bias.grad


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def batches(n=3):
    gen = torch.Generator().manual_seed(2)
    return [(torch.randn(20, 64, generator=gen), torch.randn(20, 48, generator=gen))
            for _ in range(n)]


def weight_quantizations(kernel_calls):
    return sum(op in ("quantize_weight_2d", "quantize_fp8", "quantize_fp8_row_col")
               for op, _, _ in kernel_calls)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("recipe", [Recipe(), Recipe.uniform("fp8")], ids=str)
def test_reuse_quantizes_the_weight_once_with_the_same_bits(kernel_calls, kind, recipe):
    data = batches()
    plain = accumulate(model(kind, recipe), data, reuse=False)
    every_time = weight_quantizations(kernel_calls)
    kernel_calls.clear()
    layer = model(kind, recipe)
    reused = accumulate(layer, data, reuse=True)
    once = weight_quantizations(kernel_calls)
    for a, b in zip(plain, reused):
        assert torch.equal(a, b)
    # NVFP4: one 2-D quantize per call; FP8: one two-layout cast of W per call (X's and
    # dY's casts are per call either way).
    assert every_time - once == 2
    assert layer._weight_copies is None              # dropped on exit


def test_an_in_place_change_quantizes_again(kernel_calls):
    layer = model("linear", Recipe())
    (x, g), = batches(1)
    with lowprec.reusing_weight_copies(layer):
        layer(x.clone().requires_grad_()).backward(g)
        with torch.no_grad():
            layer.weight.mul_(0.5)                   # _version moves
        y = layer(x)
    assert weight_quantizations(kernel_calls) == 2
    fresh = model("linear", Recipe())
    with torch.no_grad():
        fresh.weight.mul_(0.5)
    assert torch.equal(y, fresh(x))


def test_nested_blocks_keep_the_outer_copies():
    layer = model("linear", Recipe())
    with lowprec.reusing_weight_copies(layer):
        outer = layer._weight_copies
        with lowprec.reusing_weight_copies(layer):
            assert layer._weight_copies is outer
        assert layer._weight_copies is outer
    assert layer._weight_copies is None


def test_a_reused_call_launches_no_weight_kernels_on_hopper():
    """Traced as sm_90: a micro-batch after the first launches neither W's amax nor its
    quantize kernel (NVFP4: 2 launches fewer; FP8: W's two-layout cast, 2 fewer)."""
    def counts(recipe, reuse):
        def setup():
            layer = lowprec.Linear(1024, 4096, bias=False, recipe=recipe)
            if reuse:
                layer._weight_copies = WeightCopies()
            x = torch.empty(8192, 1024, dtype=torch.bfloat16, requires_grad=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                layer(x)                                  # the first micro-batch
            return layer, x, torch.empty(8192, 4096, dtype=torch.bfloat16)

        def step(inputs):
            layer, x, g = inputs
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = layer(x)
            y.backward(g)
        return launch_trace.trace(step, setup, capability=(9, 0)).count

    for recipe in (Recipe(), Recipe.uniform("fp8")):
        assert counts(recipe, reuse=False) - counts(recipe, reuse=True) == 2, recipe
