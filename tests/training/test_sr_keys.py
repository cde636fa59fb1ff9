"""Which key each stochastic-rounding call takes (docs/numerics.md, "Stochastic-rounding
keys"; ``lowprec.sr_keys``). Expected keys come from ``sr_oracle`` (NumPy uint64
arithmetic written from the rule), never from lowprec."""

import copy

import pytest
import torch
import torch.utils.checkpoint
from torch import nn

import lowprec
from lowprec import sr_keys
from lowprec.recipe import Recipe

from . import sr_oracle


def sr_seeds(kernel_calls):
    """The key of every SR quantization of dY, in the order they ran."""
    return [kwargs["seed"] for op, kwargs, _ in kernel_calls
            if op == "quantize_row_col" and kwargs["row_stochastic"]]


def test_the_mixing_function_is_splitmix64():
    """Known answer: splitmix64 from state 0 gives 0xE220A8397B1DCDAF first (Vigna's
    reference generator), in the oracle and in lowprec."""
    assert int(sr_oracle.splitmix64(0)) == 0xE220A8397B1DCDAF
    assert sr_keys._mix(0) == 0xE220A8397B1DCDAF
    for z in (1, 2**63, 2**64 - 1, 0x0123456789ABCDEF):
        assert sr_keys._mix(z) == int(sr_oracle.splitmix64(z))


def train_calls(layer, n, seed):
    torch.manual_seed(seed)
    for _ in range(n):
        x = torch.randn(8, 32, requires_grad=True)
        layer(x).sum().backward()


def test_a_layer_takes_the_keys_of_its_name_and_call_count(kernel_calls):
    layer = lowprec.Linear(32, 16)
    layer.lowprec_name = "blocks.0.mlp.fc"
    train_calls(layer, 3, seed=7)
    assert sr_seeds(kernel_calls) == [sr_oracle.key("blocks.0.mlp.fc", c, 7)
                                      for c in range(3)]
    assert lowprec.sr_state_dict(layer) == {
        "blocks.0.mlp.fc": {"label": "blocks.0.mlp.fc", "calls": 3, "recomputed": 0}}


def test_inference_and_non_sr_recipes_take_no_key():
    layer = lowprec.Linear(32, 16)
    with torch.no_grad():
        layer(torch.randn(4, 32))
    fp8 = lowprec.Linear(32, 16, recipe=Recipe.uniform("fp8"))
    fp8(torch.randn(4, 32, requires_grad=True)).sum().backward()
    assert layer.sr_streams()[0].state()["calls"] == 0
    assert fp8.sr_streams()[0].state()["calls"] == 0


class QKV(nn.Module):
    """Three parallel projections of one input, run in a chosen order."""

    def __init__(self, order):
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v = (nn.Linear(32, 32) for _ in range(3))
        self.order = order

    def forward(self, x):
        outs = {name: getattr(self, name)(x) for name in self.order}
        return outs["q"] + 2 * outs["k"] + 3 * outs["v"]


def qkv_weight_grads(order, compiled, kernel_calls):
    """dW of q, k, v after one step, and the keys the step took."""
    model = lowprec.convert(QKV(order))
    step = torch.compile(model, fullgraph=True) if compiled else model
    torch._dynamo.reset()
    kernel_calls.clear()
    torch.manual_seed(3)
    x = torch.randn(16, 32, requires_grad=True)
    step(x).sum().backward()
    return ({name: getattr(model, name).weight.grad for name in "qkv"},
            sorted(sr_seeds(kernel_calls)))


def test_qkv_keys_do_not_depend_on_order_and_compiled_equals_eager(kernel_calls):
    """q, k and v each take call 0 of their own stream whichever runs first, so eager
    in two orders and a fullgraph-compiled step compute the same weight gradients bit
    for bit. Under the old rule (one key per call from torch's generator, in call
    order) the reversed order gives q the key k had, and this fails."""
    want_keys = sorted(sr_oracle.key(name, 0, 3) for name in "qkv")
    runs = {"eager q,k,v": qkv_weight_grads("qkv", False, kernel_calls),
            "eager v,k,q": qkv_weight_grads("vkq", False, kernel_calls),
            "compiled q,k,v": qkv_weight_grads("qkv", True, kernel_calls)}
    torch._dynamo.reset()
    base, _ = runs["eager q,k,v"]
    for label, (grads, keys) in runs.items():
        assert keys == want_keys, label
        for name in "qkv":
            assert torch.equal(grads[name], base[name]), (label, name)


class Checkpointed(nn.Module):
    def __init__(self, reentrant):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 32)
        self.reentrant = reentrant

    def block(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

    def forward(self, x):
        return torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=self.reentrant)


def test_reentrant_checkpointing_takes_the_recomputation_keys(kernel_calls):
    """Reentrant checkpointing runs the first forward without grad (no key) and the
    backward on the recomputation, whose keys are calls 2^63 + r of each stream."""
    model = lowprec.convert(Checkpointed(reentrant=True))
    torch.manual_seed(9)
    for _ in range(2):
        model(torch.randn(8, 32, requires_grad=True)).sum().backward()
    want = sorted(sr_oracle.recomputed_key(name, r, 9) for name in ("fc1", "fc2")
                  for r in range(2))
    assert sorted(sr_seeds(kernel_calls)) == want
    assert {label: (s["calls"], s["recomputed"])
            for label, s in lowprec.sr_state_dict(model).items()} == {
        "fc1": (0, 2), "fc2": (0, 2)}


def test_non_reentrant_checkpointing_uses_the_original_forwards_keys(kernel_calls):
    model = lowprec.convert(Checkpointed(reentrant=False))
    torch.manual_seed(9)
    for _ in range(2):
        model(torch.randn(8, 32, requires_grad=True)).sum().backward()
    want = sorted(sr_oracle.key(name, c, 9) for name in ("fc1", "fc2") for c in range(2))
    assert sorted(sr_seeds(kernel_calls)) == want


def test_the_saved_counts_must_match_the_model():
    model = lowprec.convert(Checkpointed(reentrant=False))
    state = lowprec.sr_state_dict(model)
    other = lowprec.convert(QKV("qkv"))
    with pytest.raises(KeyError, match=r"missing: \['k', 'q', 'v'\].*unexpected: "
                                       r"\['fc1', 'fc2'\]"):
        lowprec.load_sr_state_dict(other, state)


def test_a_copied_layer_has_its_own_counts():
    layer = lowprec.Linear(32, 16)
    layer.lowprec_name = "fc"
    train_calls(layer, 2, seed=1)
    twin = copy.deepcopy(layer)
    train_calls(twin, 1, seed=1)
    assert layer.sr_streams()[0].state()["calls"] == 2
    assert twin.sr_streams()[0].state() == {"label": "fc", "calls": 3, "recomputed": 0}
