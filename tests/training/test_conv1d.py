"""lowprec.conv1d.Conv1D: transformers' Conv1D (y = x @ W + b, W [K, N]) with the numerics
of lowprec.linear on W^T, bit for bit, and the original's state_dict and class back.

Mutation tried: multiplying by ``weight.reshape(N, K)`` (the right shape, the wrong
elements) instead of ``weight.t()``: the bit tests fail.
"""

import pytest
import torch

from lowprec.conv1d import Conv1D
from lowprec.linear_layer import linear
from lowprec.recipe import Recipe
from lowprec.sr_keys import SRStream

transformers = pytest.importorskip("transformers")
HFConv1D = transformers.pytorch_utils.Conv1D


def step(fn, x, weight, bias, out_grad):
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(4)                                   # fixes the SR keys
    y = fn(x)
    y.backward(out_grad)
    return y.detach(), x.grad, weight.grad.clone(), bias.grad.clone()


@pytest.mark.parametrize("recipe", [Recipe(), Recipe(wgrad="fp8"),
                                    Recipe(fprop="fp8", dgrad="bf16")], ids=str)
def test_conv1d_equals_linear_on_the_transposed_weight(recipe):
    torch.manual_seed(0)
    original = HFConv1D(48, 32)                         # nf = N = 48, nx = K = 32
    layer = Conv1D(original, recipe)
    layer.lowprec_name = "h.0.attn.c_attn"
    x = torch.randn(3, 7, 32)
    out_grad = torch.randn(3, 7, 48)
    got = step(layer, x, layer.weight, layer.bias, out_grad)
    weight_t = layer.weight.detach().t().contiguous().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()
    stream = SRStream("h.0.attn.c_attn")            # the same SR keys as the layer's
    want = step(lambda a: linear(a, weight_t, bias, recipe=recipe, sr_stream=stream), x,
                weight_t, bias, out_grad)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(got[2], want[2].t()) and torch.equal(got[3], want[3])
    assert not torch.equal(got[0], original(x))          # the recipe really quantizes


def test_bf16_recipe_is_the_original_and_the_class_comes_back():
    torch.manual_seed(0)
    original = HFConv1D(48, 32)
    layer = Conv1D(original, Recipe.uniform("bf16"))
    x = torch.randn(5, 32)
    assert torch.equal(layer(x), original(x))
    assert list(layer.state_dict()) == list(original.state_dict())
    back = layer.to_original()
    assert type(back) is HFConv1D and back.weight is original.weight
    assert back.bias is original.bias and (back.nf, back.nx) == (48, 32)
    with pytest.raises(ValueError, match=r"N=40, K=32"):
        Conv1D(HFConv1D(40, 32), Recipe())
