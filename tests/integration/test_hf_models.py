"""Hugging Face families (GPT-2 Conv1D, T5 and BART encoder-decoders, Mixtral, Qwen2-MoE
and Qwen3-MoE experts, Llama), built tiny from configs: lowprec.convert lists and
handles every weight matmul, its FLOPs shares match a FLOP counter, the models train,
and checkpoints and unconvert round trip.

The expected values come from outside lowprec: the weight matmuls are enumerated from
the modules' own parameters, and the FLOPs from ``torch.utils.flop_counter`` running
the plain model. Skipped when transformers is not installed; CI installs it.

Mutations tried: dropping the experts from ``weight_matmuls`` (names test fails),
counting experts without top_k (MACs test fails), treating only the largest block list
as blocks (T5/BART's encoder then stays BF16: the block-list test fails).
"""

import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import lowprec
from lowprec.conv1d import Conv1D
from lowprec.moe import GroupedExperts

from . import hf_models

transformers = pytest.importorskip("transformers")

MODELS = list(hf_models.FACTORIES)
MOE = ("mixtral", "qwen2_moe", "qwen3_moe")


def expected_names(model):
    """Every module owning a 2-D weight (3-D: one entry per expert tensor), embeddings
    (lookups) excepted."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            continue
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() == 2:
                names.add(name)
            elif p.dim() == 3:
                names.add(f"{name}.{pname}")
    return names


def convert_quietly(model, **kwargs):
    """convert, asserting it warns about nothing (every matmul here is handled)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = lowprec.convert(model, **kwargs)
    assert not [w for w in record if "lowprec.convert" in str(w.message)]
    return model


def module_flops(name, model):
    """FLOPs of each module's own matmuls in one forward of the plain model."""
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model.eval()(**{k: v for k, v in hf_models.batch(name, 0).items()
                            if k != "labels"})
    root = type(model).__name__
    return {key.removeprefix(f"{root}."): sum(ops.values())
            for key, ops in counter.get_flop_counts().items()}


@pytest.mark.parametrize("name", MODELS)
def test_default_plan_lists_every_weight_matmul_with_flop_counter_shares(name):
    model = hf_models.build(name, transformers)
    names = expected_names(model)
    flops = module_flops(name, model)
    model = convert_quietly(model)
    plan = model.lowprec_plan
    assert set(plan.layers) == names
    assert lowprec.Plan.from_json(plan.to_json()) == plan         # kinds, lists, experts
    # Shares: an experts module's two projections together against its counted FLOPs.
    counted = {}
    for layer in plan:
        module = layer.name.rpartition(".")[0] if layer.kind == "experts" else layer.name
        counted.setdefault(module, []).append(layer.flops_share)
    total = sum(flops[module] for module in counted)
    for module, shares in counted.items():
        assert math.isclose(sum(shares), flops[module] / total, rel_tol=1e-9), module
    # Every converted kind became a lowprec module; routers stayed BF16.
    for layer in plan:
        if layer.kind == "experts":
            owner = model.get_submodule(layer.name.rpartition(".")[0])
            assert isinstance(owner, GroupedExperts)
            assert layer.experts == [4, 2]
        elif layer.kind == "conv1d":
            assert isinstance(model.get_submodule(layer.name), Conv1D)
        elif layer.kind == "untouched":
            assert layer.reason.startswith("router") and layer.name.endswith(".gate")
    kinds = {layer.kind for layer in plan}
    assert ("conv1d" in kinds) == (name == "gpt2")
    assert ("experts" in kinds) == (name in MOE)


@pytest.mark.parametrize("name", MODELS)
def test_every_block_list_keeps_its_own_bf16_tail(name):
    model = convert_quietly(hf_models.build(name, transformers))
    plan = model.lowprec_plan
    lists = plan.meta["block_lists"]
    if name in hf_models.ENCODER_DECODER:
        assert len(lists) == 2                               # encoder and decoder
    else:
        assert len(lists) == 1
    for layer in plan:
        if layer.block_list is None or layer.reason.startswith(("shape", "router")):
            assert layer.precisions() == ("bf16",) * 3
            continue
        n_blocks, n_tail = lists[layer.block_list]
        index = int(layer.name[len(layer.block_list) + 1:].split(".")[0])
        expected = "bf16" if index >= n_blocks - n_tail else "nvfp4"
        assert layer.precisions() == (expected,) * 3, layer.name
    # The plan, through JSON, applies to a fresh model the same way.
    again = convert_quietly(hf_models.build(name, transformers),
                            plan=lowprec.Plan.from_json(plan.to_json()))
    assert [type(m) for m in again.modules()] == [type(m) for m in model.modules()]


@pytest.mark.parametrize("name", MODELS)
def test_checkpoints_load_both_ways_and_unconvert_round_trips(name):
    reference = hf_models.build(name, transformers).eval()
    inputs = {k: v for k, v in hf_models.batch(name, 1).items() if k != "labels"}
    with torch.no_grad():
        before = reference(**inputs).logits
    types = {n: type(m) for n, m in reference.named_modules()}
    params = dict(reference.named_parameters())
    model = convert_quietly(reference)
    state = model.state_dict()
    plain = hf_models.build(name, transformers, seed=1)
    assert list(state) == list(plain.state_dict())
    plain.load_state_dict(state)                      # strict: same keys and shapes
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in state.items())
    model = lowprec.unconvert(model)
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert all(p is params[n] for n, p in model.named_parameters())
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)


# One of each kind in the default run (Conv1D, encoder-decoder, experts with a shared
# expert); ~1 s per step on 2 loaded cores, so the others run with -m slow.
FAST_TRAINING = ("gpt2", "t5", "qwen2_moe")


@pytest.mark.parametrize("name", [n if n in FAST_TRAINING else
                                  pytest.param(n, marks=pytest.mark.slow) for n in MODELS])
def test_twenty_training_steps_are_finite_and_falling(name):
    model = convert_quietly(hf_models.build(name, transformers)).train()
    losses = hf_models.train_steps(model, hf_models.batch(name, 2), steps=20)
    assert all(math.isfinite(x) for x in losses), losses
    # One repeated batch: the loss falls well below its start (ln 128 ~ 4.85).
    assert losses[-1] < losses[0] - 1.0, losses


@pytest.mark.parametrize("name", ["gpt2", "t5", "mixtral", "qwen2_moe", "llama"])
def test_budget_plan_lists_every_weight_matmul(name):
    model = hf_models.build(name, transformers)
    names = expected_names(model)
    calibration = [hf_models.batch(name, seed) for seed in (4, 5)]
    model = convert_quietly(model, budget=0.75, calibration=calibration,
                            loss_fn=lambda m, b: m(**b).loss, progress=False)
    plan = model.lowprec_plan
    assert set(plan.layers) == names
    assert plan.meta["nvfp4_fraction"] >= 0.75
    assert math.isclose(sum(layer.flops_share for layer in plan), 1.0, rel_tol=1e-9)
    for layer in plan:
        if layer.kind in ("linear", "conv1d", "experts") and layer.reason.startswith("ILP"):
            assert "LD fp4/fp8" in layer.reason and layer.stats["batches"] == 2
