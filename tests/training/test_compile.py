"""torch.compile: no graph breaks (fullgraph), and compiled == eager."""

import pytest
import torch
import torch._dynamo
from torch import nn

from lowprec import sr_keys
from lowprec.conversion import convert
from lowprec.linear_layer import Linear
from lowprec.recipe import Recipe

from .tinygpt import TinyGPT, loss_fn, markov_batches

U32 = 2.0 ** -24


def mlp():
    """Linears with three recipes between ReLUs (exact in eager and in inductor; GELU
    is not: inductor's erf differs from eager's in the last bit)."""
    torch.manual_seed(0)
    return nn.Sequential(Linear(32, 64), nn.ReLU(), Linear(64, 48, recipe=Recipe(wgrad="fp8")),
                         nn.ReLU(), Linear(48, 32, recipe=Recipe(fprop="fp8", dgrad="bf16")))


def train_step(model, x, counts=None):
    """Loss and all gradients of one step, with the SR keys fixed by the seed and the
    layers' SR counts (``counts``, from ``sr_keys.state_dict``)."""
    for p in model.parameters():
        p.grad = None
    if counts is not None:
        sr_keys.load_state_dict(model, counts)
    x = x.clone().requires_grad_()
    torch.manual_seed(7)
    y = model(x)
    y.square().mean().backward()
    return y.detach(), x.grad, {n.removeprefix("_orig_mod."): p.grad
                                for n, p in model.named_parameters()}


def test_tiny_gpt_has_no_graph_breaks():
    model = convert(TinyGPT(vocab=16, d_model=32, n_blocks=2, n_heads=2, seq_len=16))
    tokens = markov_batches(1, 2, 16, vocab=16)[0]
    explanation = torch._dynamo.explain(loss_fn)(model, tokens)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_compiled_equals_eager_bit_for_bit():
    """Everything but the bias gradients is bit-identical: the quantized GEMMs run in
    the custom ops either way, and both runs start from the same SR counts. The bias
    gradient sum(dY, 0) is left to inductor to fuse, which may sum in another order:
    |db - db_eager| <= 2 gamma_M sum_m |dY[m]| with gamma_M = M u / (1 - M u)."""
    model = mlp()
    compiled = torch.compile(model, fullgraph=True)
    for tokens in (17, 40):                    # the second shape recompiles dynamic in M
        x = torch.randn(2, tokens, 32, generator=torch.Generator().manual_seed(tokens))
        counts = sr_keys.state_dict(model)
        y, dx, grads = train_step(model, x, counts)
        y_c, dx_c, grads_c = train_step(compiled, x, counts)
        assert torch.equal(y, y_c) and torch.equal(dx, dx_c)
        m = 2 * tokens
        gamma = m * U32 / (1 - m * U32)
        dys = iter(_output_grads(model, x, counts))
        for name, grad in grads.items():
            if name.endswith("weight"):
                assert torch.equal(grads_c[name], grad), name
            else:
                bound = 2 * gamma * next(dys).abs().sum(0)
                assert ((grads_c[name] - grad).abs() <= bound).all(), name


def _output_grads(model, x, counts):
    """dY of each Linear in the eager model (its bias gradient is their column sum)."""
    outputs = []
    hooks = [m.register_full_backward_hook(lambda mod, gi, go: outputs.append(go[0]))
             for m in model if isinstance(m, Linear)]
    train_step(model, x, counts)
    for hook in hooks:
        hook.remove()
    return [g.reshape(-1, g.shape[-1]) for g in reversed(outputs)]


@pytest.mark.slow
def test_tiny_gpt_compiled_trains_like_eager_with_and_without_checkpointing():
    """Not bit-exact: inductor fuses layer norm, softmax and GELU with other roundings
    (last-bit differences), which can flip a rounding into FP4. Bound 1e-4 relative
    per step (measured ~1e-7); compiled with and without activation checkpointing."""
    batches = markov_batches(3, 4, 16, vocab=16)
    losses = {}
    for mode in ("eager", "compiled", "compiled+checkpoint"):
        torch.manual_seed(0)
        model = convert(TinyGPT(vocab=16, d_model=32, n_blocks=2, n_heads=2, seq_len=16,
                                checkpoint="checkpoint" in mode))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        step_loss = torch.compile(loss_fn, fullgraph=True) if "compiled" in mode else loss_fn
        losses[mode] = []
        for tokens in batches:
            loss = step_loss(model, tokens)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[mode].append(loss.item())
    for mode in ("compiled", "compiled+checkpoint"):
        for eager, compiled in zip(losses["eager"], losses[mode]):
            assert abs(compiled - eager) <= 1e-4 * eager, mode
