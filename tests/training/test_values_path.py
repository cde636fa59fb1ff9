"""The training layer on a kernel table whose NVFP4 GEMM multiplies bf16 values (the
Hopper emulation), with the quantizers writing those values directly (values mode): the
same bits as the packed path, with the dequantize launches gone.

Run here on the Triton backend in its interpreter (the test session sets
``TRITON_INTERPRET=1``), whose quantizers have values mode and whose NVFP4 GEMM is
``dequant+torch.mm``; the packed run is the same table with values mode switched off.
"""

import pytest
import torch

import lowprec
from lowprec import backends, launch_trace
from lowprec.recipe import Recipe

RECIPES = [Recipe(), Recipe(weight_2d=False), Recipe(wgrad="fp8"),
           Recipe(fprop="bf16", dgrad="nvfp4", wgrad="nvfp4")]


@pytest.fixture
def triton_table(monkeypatch):
    """CPU tensors take the Triton kernels (interpreted)."""
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", ("triton",))
    monkeypatch.setattr(backends, "_TABLES", {})
    table = backends.kernel_table(torch.device("cpu"))
    assert table.nvfp4_values, table.names["nvfp4_gemm"]
    return table


def step(recipe, seed=0):
    """Y, dX, dW, db of one Linear forward+backward (SR keys of a fixed stream)."""
    gen = torch.Generator().manual_seed(seed)
    layer = lowprec.Linear(64, 48, recipe=recipe)
    layer.lowprec_name = "values.fc"
    with torch.no_grad():
        layer.weight.copy_(torch.randn(48, 64, generator=gen) / 8)
        layer.bias.copy_(torch.randn(48, generator=gen))
    x = torch.randn(37, 64, generator=gen, requires_grad=True)
    g = torch.randn(37, 48, generator=gen)
    torch.manual_seed(3)
    y = layer(x)
    y.backward(g)
    return y.detach(), x.grad, layer.weight.grad, layer.bias.grad


@pytest.mark.parametrize("recipe", RECIPES, ids=str)
def test_values_mode_gives_the_packed_paths_bits(triton_table, monkeypatch, recipe):
    values = step(recipe)
    monkeypatch.setattr(triton_table, "nvfp4_values", False)
    packed = step(recipe)
    for name, a, b in zip(("Y", "dX", "dW", "db"), values, packed):
        assert a.dtype == b.dtype and torch.equal(a, b), name


def test_the_hopper_path_drops_the_operand_dequantize_launches():
    """Traced as sm_90 (every backend installed): nothing is dequantized; the quantizers
    write every operand's values, the saved X^T's included. Mutations: the layer asking
    for packed copies (6 dequantize launches, fails); X^T kept packed (1, fails)."""
    setup, run = launch_trace.linear_step(8192, 1024, 4096, Recipe(), bias=False)
    trace = launch_trace.trace(run, setup, capability=(9, 0))
    kernels = trace.by_kernel()
    assert "triton:_dequantize_kernel" not in kernels, kernels
    assert kernels["aten::mm"] == 3 and kernels["triton:_epilogue_kernel"] == 3
