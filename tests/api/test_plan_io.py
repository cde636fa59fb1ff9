"""Plan files (``Plan.save`` / ``Plan.load``), ``from_json`` as a strict validator with
the same schema as ``to_json`` (issue 22), and the two FLOPs shares of a plan's table
(issue 19: one definition each, stated where the number is printed)."""

import json
import math
import re

import pytest
import torch
from torch import nn

import lowprec
from lowprec.plan import LayerPlan, Plan
from lowprec.recipe import Recipe


def sample_plan():
    return Plan([
        LayerPlan("blocks.0.fc", (32, 32), Recipe(wgrad="bf16"), "planned",
                  flops_share=0.5, cost=0.3, stats={"ld": {"nvfp4": 1e-3}},
                  block_list="blocks"),
        LayerPlan("moe.experts.down_proj", (32, 64), Recipe.uniform("nvfp4"), "planned",
                  flops_share=0.25, kind="experts", experts=[8, 2]),
        LayerPlan("head", (16, 32), Recipe.uniform("bf16"), "forced", flops_share=0.25),
    ], {"budget": 0.5, "list": [1, 2.5]})


# -- files ------------------------------------------------------------------------------

def test_save_then_load_gives_the_same_plan(tmp_path):
    plan = sample_plan()
    path = tmp_path / "plan.json"
    plan.save(path)
    assert Plan.load(path) == plan
    assert Plan.load(str(path)) == plan
    assert json.loads(path.read_text())["layers"][1]["experts"] == [8, 2]



def test_a_plan_file_holds_the_switches_once():
    """A layer's entry holds its three precisions, ``meta["recipe"]`` the switches every
    layer's recipe shares; a layer with other switches cannot be written."""
    base = Recipe(rht=False)
    plan = Plan([LayerPlan("fc", (32, 32), base.replace(wgrad="bf16"), "planned")],
                {"recipe": base.to_dict()})
    text = plan.to_json()
    assert Plan.from_json(text) == plan
    assert Plan.from_json(text)["fc"].recipe == Recipe(wgrad="bf16", rht=False)
    assert sorted(json.loads(text)["layers"][0]) == sorted(
        ["name", "shape", "fprop", "dgrad", "wgrad", "reason", "flops_share", "cost",
         "stats", "kind", "block_list", "experts"])
    plan["fc"].recipe = Recipe(wgrad="bf16")                 # RHT on: not the plan's
    with pytest.raises(ValueError, match=r"layers\['fc'\]: its recipe's switches"):
        plan.to_json()

@pytest.mark.parametrize("as_path", [True, False])
def test_from_json_given_a_path_says_to_use_load(tmp_path, as_path):
    path = tmp_path / "plan.json"
    sample_plan().save(path)
    with pytest.raises(ValueError, match=r"must be JSON text.*looks like a file path: use "
                                         r"lowprec\.Plan\.load\(path\)"):
        Plan.from_json(path if as_path else str(path))


@pytest.mark.parametrize("text", ["plan.json", "  runs/plan.JSON  "])
def test_from_json_given_a_json_file_name_that_does_not_exist(text):
    with pytest.raises(ValueError, match=r"looks like a file path: use lowprec\.Plan\.load"):
        Plan.from_json(text)


def test_from_json_still_refuses_text_that_is_not_json():
    with pytest.raises(ValueError, match=r"must be JSON text: ") as info:
        Plan.from_json("{'format': 1}")
    assert "Plan.load" not in str(info.value)          # text, not a path: no such advice


def test_load_names_the_file_of_a_bad_plan(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": 1, "meta": {}, "layers": [{"name": ""}]}')
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": plan JSON layers\[0\]"):
        Plan.load(path)
    with pytest.raises(FileNotFoundError):
        Plan.load(tmp_path / "missing.json")


# -- from_json: one schema with to_json ---------------------------------------------------

def _text_with(change):
    data = json.loads(sample_plan().to_json())
    change(data)
    # allow_nan: the test writes Python's NaN / Infinity tokens, which json.loads reads
    return json.dumps(data, allow_nan=True)


def _set(i, **fields):
    return lambda d: d["layers"][i].update(fields)


BAD = {
    "flops_share NaN": (_set(0, flops_share=math.nan), r"layers\[0\]\.flops_share is nan"),
    "flops_share Inf": (_set(0, flops_share=math.inf), r"layers\[0\]\.flops_share is inf"),
    "flops_share < 0": (_set(0, flops_share=-0.25),
                        r"'blocks\.0\.fc'\): flops_share must be a number in \[0, 1\].*-0\.25"),
    "flops_share > 1": (_set(0, flops_share=1.5), r"flops_share must be a number in \[0, 1\]"
                                                  r".*got 1\.5"),
    "cost NaN": (_set(0, cost=math.nan), r"layers\[0\]\.cost is nan"),
    "cost -Inf": (_set(0, cost=-math.inf), r"layers\[0\]\.cost is -inf"),
    "cost < 0": (_set(0, cost=-1), r"cost must be a finite number >= 0 or null; got -1"),
    "NaN in stats": (_set(0, stats={"ld": {"nvfp4": math.nan}}),
                     r"layers\[0\]\.stats\['ld'\]\['nvfp4'\] is nan"),
    "NaN in meta": (lambda d: d["meta"].update(x=[1, math.nan]), r"meta\['x'\]\[1\] is nan"),
    "experts on linear": (_set(0, experts=[-1, 99]),
                          r"layers\[0\].*experts is only for kind 'experts'.*\[-1, 99\]"),
    "experts top_k > E": (_set(1, experts=[2, 3]),
                          r"layers\[1\].*experts must be \[E, top_k\] with 1 <= top_k <= E"
                          r".*\[2, 3\]"),
    "experts top_k 0": (_set(1, experts=[8, 0]), r"1 <= top_k <= E.*\[8, 0\]"),
    "experts negative": (_set(1, experts=[-8, 2]), r"1 <= top_k <= E.*\[-8, 2\]"),
    "experts missing": (_set(1, experts=None), r"experts must be \[E, top_k\].*None"),
    "experts strings": (_set(1, experts=["a"]), r"layers\[1\].*experts must be two ints "
                                                 r"\[E, top_k\]; got \['a'\]"),
    "experts floats": (_set(1, experts=[8.0, 2]), r"experts must be two ints.*\[8\.0, 2\]"),
    "block_list naming nothing": (_set(0, block_list=""),
                                  r"block_list '' does not hold the layer"),
    "block_list elsewhere": (_set(0, block_list="decoder"),
                             r"block_list 'decoder' does not hold the layer"),
    "block_list prefix w/o dot": (lambda d: d["layers"][0].update(name="blocks2.0.fc"),
                                  r"block_list 'blocks' does not hold the layer"),
    "empty name": (_set(2, name=""), r"layers\[2\].*name must be a non-empty str.*; got ''"),
    "unknown kind": (_set(2, kind="conv2d"), r"layers\[2\].*kind must be one of.*'conv2d'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_from_json_refuses_what_to_json_refuses(case):
    change, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        Plan.from_json(_text_with(change))


TO_JSON_BAD = {
    "flops_share < 0": ("blocks.0.fc", "flops_share", -0.25,
                        r"layers\['blocks\.0\.fc'\].*flops_share must be a number in \[0, 1\]"),
    "cost < 0": ("blocks.0.fc", "cost", -1, r"cost must be a finite number >= 0.*-1"),
    "experts on linear": ("blocks.0.fc", "experts", [-1, 99],
                          r"experts is only for kind 'experts'.*\[-1, 99\]"),
    "experts top_k > E": ("moe.experts.down_proj", "experts", [2, 3],
                          r"1 <= top_k <= E.*\[2, 3\]"),
    "block_list naming nothing": ("blocks.0.fc", "block_list", "",
                                  r"block_list '' does not hold the layer"),
    "empty name": ("head", "name", "", r"name must be a non-empty str.*; got ''"),
}


@pytest.mark.parametrize("case", list(TO_JSON_BAD))
def test_to_json_refuses_the_same_entries(case):
    """One schema: what from_json refuses, to_json refuses too (the plan built in
    Python, then changed)."""
    layer, field, value, message = TO_JSON_BAD[case]
    plan = sample_plan()
    setattr(plan[layer], field, value)
    with pytest.raises(ValueError, match=message):
        plan.to_json()


def test_a_block_list_that_is_the_model_itself():
    """discovery names the root list "" (a model that is an nn.ModuleList)."""
    plan = Plan([LayerPlan("0.fc", (32, 32), Recipe.uniform("nvfp4"), "default recipe",
                           block_list="")])
    assert Plan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize("depth", [200, 100_000])
def test_deep_nesting_is_a_value_error(depth):
    """Python's json raises RecursionError past ~1000 levels; a deep but loadable
    stats entry is refused by depth too (no RecursionError in the checks or to_json)."""
    data = json.loads(sample_plan().to_json())
    text = json.dumps(data).replace('"ld": {"nvfp4": 0.001}',
                                    '"ld": ' + "[" * depth + "]" * depth)
    with pytest.raises(ValueError, match=r"nested (at most 64 levels|deeper than 64)"):
        Plan.from_json(text)
    plan = sample_plan()
    nested = []
    for _ in range(200):
        nested = [nested]
    plan["head"].stats = {"deep": nested}
    with pytest.raises(ValueError, match=r"layers\['head'\]\.stats\['deep'\].* nested "
                                         r"deeper than 64 levels"):
        plan.to_json()


def test_valid_plans_round_trip():
    plan = sample_plan()
    assert Plan.from_json(plan.to_json()) == plan


# -- the table's FLOPs shares ----------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        return x + torch.tanh(self.fc(x))


class EncoderDecoder(nn.Module):
    """Two stacks, as a T5: the encoder runs on 32 tokens, the decoder on 16."""

    def __init__(self, d=32):
        super().__init__()
        self.encoder = nn.ModuleList([Block(d) for _ in range(2)])
        self.decoder = nn.ModuleList([Block(d) for _ in range(2)])
        self.wide = nn.Linear(d, 4 * d)        # a decoder layer 4x as large (outside lists)

    def forward(self, enc, dec):
        for block in self.encoder:
            enc = block(enc)
        dec = dec + enc.mean(0, keepdim=True)
        for block in self.decoder:
            dec = block(dec)
        return self.wide(dec).square().mean()


TOKENS = {"encoder": 32, "decoder": 16, "wide": 16}


def test_table_states_both_shares_and_each_matches_its_definition():
    torch.manual_seed(0)
    model = EncoderDecoder()
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(32, 32, generator=gen), torch.randn(16, 32, generator=gen))
               for _ in range(2)]
    lowprec.convert(model, budget=0.5, calibration=batches, progress=False)
    plan = model.lowprec_plan

    # Independent of the code under test: per-token multiply-adds and calibration FLOPs
    # (tokens x N x K) of each layer, from the model's own modules, three GEMMs each.
    per_token, calibrated = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            n, k = module.weight.shape
            per_token[name] = n * k
            calibrated[name] = TOKENS[name.split(".")[0]] * n * k
    assert set(per_token) == {layer.name for layer in plan}

    def nvfp4_share(weights):
        total = 3 * sum(weights.values())
        return sum(weights[layer.name] * layer.precisions().count("nvfp4")
                   for layer in plan) / total

    table_share, budget_share = nvfp4_share(per_token), nvfp4_share(calibrated)
    assert plan.summary()["nvfp4"] == pytest.approx(table_share, rel=1e-12)
    assert plan.meta["nvfp4_fraction"] == pytest.approx(budget_share, rel=1e-12)
    assert round(100 * table_share, 1) != round(100 * budget_share, 1)   # they differ here

    lines = plan.table().splitlines()
    footer = next(line for line in lines if line.startswith("linear FLOPs by precision"))
    budget = next(line for line in lines if line.startswith("planner's nvfp4_fraction"))
    assert f"nvfp4 {100 * table_share:.1f}%" in footer
    assert "counted once per token" in footer
    assert f"{100 * budget_share:.1f}%" in budget
    assert "calibration batches" in budget and "own token count" in budget
    # the number is not printed a second time, bare, among the meta
    assert not any("nvfp4_fraction=" in line for line in lines)
