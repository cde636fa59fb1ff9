"""The planted-outlier model family of the planner experiments
(lowprec.experiments.planner.planted).

Mutations tried: dividing the weight columns by the magnitude squared
(test_planting_keeps_the_high_precision_function fails), scaling every channel
(test_the_planted_channels_are_outliers_at_the_layer_input fails), no gradient hooks
(test_the_planted_columns_and_norm_channels_do_not_train fails), a deep copy not frozen
again (its "deep copy" case fails), sensitivity.py not freezing its copies
(test_the_short_horizon_runs_freeze_each_deep_copy fails).
"""

import copy
import dataclasses

import pytest
import torch

import lowprec
from lowprec.demo.model import GPTConfig
from lowprec.experiments.planner import compare_plans
from lowprec.experiments.planner.planted import (LAYOUTS, Planting, build, freeze, plant,
                                                 planting_of)

CFG = GPTConfig(d_model=32, n_layer=4, n_head=2, seq_len=16)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, CFG.vocab, (4, CFG.seq_len), generator=g)
    return idx, torch.roll(idx, -1, dims=1)


def test_channels_are_per_block_offsets():
    # One per block at offset 3; two per block at offsets 3 and 11 (3 + 16 / 2).
    assert Planting(("blocks.0.mlp.fc",)).channels(32) == [3, 19]
    assert Planting(("blocks.0.mlp.fc",), per_block=2).channels(32) == [3, 11, 19, 27]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_planting_keeps_the_high_precision_function(layout):
    plain = build(CFG, 0, torch.device("cpu"))
    planted = build(CFG, 0, torch.device("cpu"), LAYOUTS[layout])
    idx, _ = _batch()
    with torch.no_grad():
        # x * 300 and w / 300 round differently in FP32: equal to FP32 rounding only.
        torch.testing.assert_close(planted(idx), plain(idx), rtol=1e-4, atol=1e-5)


def test_the_planted_channels_are_outliers_at_the_layer_input():
    planting = LAYOUTS["mlp1"]
    model = build(CFG, 0, torch.device("cpu"), planting)
    seen = {}
    layer = model.blocks[1].mlp.fc
    layer.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        model(_batch()[0])
    x = seen["x"].abs().flatten(0, 1)
    planted = planting.channels(32)
    others = [c for c in range(32) if c not in planted]
    # LayerNorm outputs are O(1); the planted channels carry x300 of them, so their
    # typical (median) size is over 100x the other channels' median.
    ratio = x[:, planted].median() / x[:, others].median()
    assert ratio > 100


@pytest.mark.parametrize("copied", [False, True], ids=["built", "deep copy, frozen again"])
def test_the_planted_columns_and_norm_channels_do_not_train(copied):
    """Also on a deep copy (the short-horizon sensitivity runs continue from one):
    ``copy.deepcopy`` drops tensor hooks, and ``freeze`` puts them back."""
    planting = LAYOUTS["mlp1"]
    model = build(CFG, 0, torch.device("cpu"), planting)
    candidates = lowprec.candidate_layers(model)
    lowprec.convert(model, plan=compare_plans.uniform_plan(candidates, "bf16"))
    if copied:
        model = freeze(copy.deepcopy(model), planting)
    model(*_batch()).backward()
    planted = planting.channels(32)
    block = model.blocks[1]
    weight_grad = block.mlp.fc.weight.grad
    assert torch.count_nonzero(weight_grad[:, planted]) == 0
    assert torch.count_nonzero(weight_grad[:, [0, 1, 2]]) > 0
    norm = block.ln2.norm
    assert torch.count_nonzero(norm.weight.grad[planted]) == 0
    assert torch.count_nonzero(norm.bias.grad[planted]) == 0
    assert torch.count_nonzero(norm.weight.grad) > 0


def test_the_short_horizon_runs_freeze_each_deep_copy(monkeypatch, tmp_path):
    """sensitivity.py's short-horizon mode continues every run from a deep copy of the
    checkpoint: on a planted preset each copy is frozen again (here the smoke model under
    a planted preset's name; one call per run, the high-precision one included)."""
    from lowprec.experiments.planner import sensitivity
    monkeypatch.setitem(sensitivity.PRESETS, "planted-mlp1", sensitivity.PRESETS["smoke"])
    frozen = []

    def spy(model, planting):
        frozen.append(planting)
        return freeze(model, planting)
    monkeypatch.setattr(sensitivity, "freeze", spy)
    record = sensitivity.main(["--preset", "planted-mlp1", "--seeds", "1", "--horizon", "1",
                               "--checkpoint", "2", "--formats", "nvfp4",
                               "--out", str(tmp_path)])
    assert len(frozen) == len(record["runs"]) == 1 + 2 * 4 * 2    # bf16 + units x groups
    assert set(frozen) == {LAYOUTS["mlp1"]}


def test_planting_draws_no_random_numbers():
    # Same seed, same weights everywhere except the divided columns.
    plain = build(CFG, 0, torch.device("cpu"))
    planted = build(CFG, 0, torch.device("cpu"), LAYOUTS["mlp1"])
    torch.testing.assert_close(planted.blocks[0].attn.qkv.weight,
                               plain.blocks[0].attn.qkv.weight, rtol=0, atol=0)
    state = torch.get_rng_state()
    plant(plain, LAYOUTS["depths"])
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("name", ["blocks.1.mlp.proj", "blocks.x.mlp.fc", "mlp.fc",
                                  "blocks.1.attn.proj"])
def test_only_a_norms_consumer_can_be_planted(name):
    with pytest.raises(ValueError, match="cannot plant outliers at"):
        Planting((name,))


def test_bad_plantings_name_the_value():
    with pytest.raises(ValueError, match="per_block must be in 1..16; got 0"):
        Planting(("blocks.0.mlp.fc",), per_block=0)
    with pytest.raises(ValueError, match="magnitude must be a positive number; got -1"):
        Planting(("blocks.0.mlp.fc",), magnitude=-1)
    with pytest.raises(ValueError, match="the model has 4 blocks"):
        build(CFG, 0, torch.device("cpu"), Planting(("blocks.7.mlp.fc",)))
    model = build(CFG, 0, torch.device("cpu"), LAYOUTS["mlp1"])
    with pytest.raises(ValueError, match="planted twice"):
        plant(model, LAYOUTS["mlp1"])


def test_presets_name_their_layout():
    assert planting_of("cpu") is None
    assert planting_of("planted-depths") == LAYOUTS["depths"]
    assert dataclasses.asdict(planting_of("planted-mlp1"))["layers"] == ("blocks.1.mlp.fc",)
