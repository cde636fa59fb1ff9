"""lowprec.Linear as a drop-in nn.Linear, convert/unconvert, and the Plan."""

import json

import pytest
import torch
from torch import nn

import lowprec.planner
from lowprec.conversion import convert, unconvert
from lowprec.discovery import candidate_layers, find_block_lists
from lowprec.linear_layer import Linear
from lowprec.plan import LayerPlan, Plan
from lowprec.recipe import Recipe

from .tinygpt import TinyGPT

# -- lowprec.Linear ---------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_keys_and_checkpoints_move_both_ways(bias):
    plain = nn.Linear(32, 48, bias=bias)
    ours = Linear(32, 48, bias=bias, recipe=Recipe(wgrad="fp8"))
    assert list(ours.state_dict()) == list(plain.state_dict())
    assert list(ours.buffers()) == []
    ours.load_state_dict(plain.state_dict())
    assert torch.equal(ours.weight, plain.weight)
    plain.load_state_dict(Linear(32, 48, bias=bias).state_dict())


def test_constructor_arguments_and_repr():
    layer = Linear(32, 16, bias=False, dtype=torch.bfloat16, device="cpu")
    assert layer.weight.dtype == torch.bfloat16 and layer.bias is None
    assert layer.recipe == Recipe()
    assert "recipe=nvfp4/nvfp4/nvfp4 (rht sr 2d)" in repr(layer)
    with pytest.raises(TypeError, match="lowprec.Recipe"):
        layer.recipe = "nvfp4"


def test_from_linear_and_to_linear_share_the_parameters():
    plain = nn.Linear(32, 16).eval()
    ours = Linear.from_linear(plain, Recipe.uniform("fp8"))
    assert ours.weight is plain.weight and ours.bias is plain.bias
    assert not ours.training and ours.recipe == Recipe.uniform("fp8")
    back = ours.to_linear()
    assert type(back) is nn.Linear and back.weight is plain.weight
    assert back.bias is plain.bias and not back.training


# -- convert / unconvert ----------------------------------------------------------------

def precisions(plan):
    return {layer.name: layer.recipe.fprop for layer in plan}


@pytest.mark.parametrize("n_blocks, n_bf16", [(1, 1), (4, 1), (7, 1), (10, 2), (13, 2),
                                              (20, 3)])
def test_default_plan_keeps_the_last_15_percent_of_blocks_bf16(n_blocks, n_bf16):
    model = convert(TinyGPT(vocab=16, d_model=32, n_blocks=n_blocks, n_heads=2))
    plan = model.lowprec_plan
    assert plan.meta["block_lists"] == {"blocks": [n_blocks, n_bf16]}
    for layer in plan:
        if layer.name == "head":
            assert layer.precisions() == ("bf16",) * 3 and "outside" in layer.reason
            continue
        block = int(layer.name.split(".")[1])
        in_tail = block >= n_blocks - n_bf16
        assert layer.precisions() == (("bf16",) * 3 if in_tail else ("nvfp4",) * 3)
        assert ("last" in layer.reason) == in_tail


def test_only_plain_linears_are_swapped_and_the_rest_is_listed_untouched():
    model = TinyGPT(vocab=16, d_model=32, n_blocks=2, n_heads=2)
    model.mha = nn.MultiheadAttention(32, 2)              # its out_proj is a subclass
    before = {name: type(m) for name, m in model.named_modules()}
    with pytest.warns(UserWarning, match="left 2 weight-matmul") as record:
        convert(model)
    assert len(record) == 1
    message = str(record[0].message)
    assert "mha (" in message and "mha.out_proj (" in message
    for name, module in model.named_modules():
        if before[name] is nn.Linear:
            assert type(module) is Linear and module.lowprec_name == name
        else:
            assert type(module) is before[name], name
    plan = model.lowprec_plan
    # MHA's in_proj (3 x 32 rows) and its out_proj subclass: listed, untouched, BF16.
    assert plan["mha"].kind == plan["mha.out_proj"].kind == "untouched"
    assert plan["mha"].shape == (96, 32) and "MultiheadAttention" in plan["mha"].reason
    assert "subclass of nn.Linear" in plan["mha.out_proj"].reason
    assert plan["mha"].precisions() == ("bf16",) * 3
    assert len(plan) == 2 * 4 + 1 + 2


def test_bad_shapes_and_filtered_layers_stay_bf16_with_the_reason():
    model = nn.Sequential(nn.Linear(20, 32), nn.Linear(32, 40), nn.Linear(40, 64),
                          nn.Linear(64, 64), nn.Linear(64, 64))
    convert(model, filter_fn=lambda module, name: name != "3")
    plan = model.lowprec_plan
    assert "K=20" in plan["0"].reason and "N=40" in plan["1"].reason
    assert "K=40" in plan["2"].reason
    assert plan["3"].reason == "filtered"
    assert [layer.recipe.fprop for layer in plan] == ["bf16"] * 4 + ["nvfp4"]
    forced = {name: reason for name, _, reason in candidate_layers(model)}
    assert forced["4"] is None and forced["3"] is None     # no filter given here
    text = str(plan)
    assert all(name in text for name in "01234") and "K=20" in text


def test_block_lists_are_the_outermost_lists_of_alike_blocks():
    class Expert(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 16)

    class MoEBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = nn.ModuleList(Expert() for _ in range(8))   # more children

    model = nn.Module()
    model.layers = nn.ModuleList(MoEBlock() for _ in range(3))
    model.decoder = nn.Sequential(Expert(), Expert())
    model.stem = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16))   # bare Linears
    assert find_block_lists(model) == [("layers", model.layers),
                                       ("decoder", model.decoder)]


def test_unconvert_restores_plain_linears_with_the_same_parameters():
    torch.manual_seed(0)
    model = TinyGPT(vocab=16, d_model=32, n_blocks=2, n_heads=2)
    tokens = torch.randint(16, (2, 8))
    before = model(tokens)
    params = list(model.parameters())
    state = model.state_dict()
    convert(model)
    assert list(model.state_dict()) == list(state)
    unconvert(model)
    assert not hasattr(model, "lowprec_plan")
    assert all(type(m) is not Linear for m in model.modules())
    assert all(p is q for p, q in zip(model.parameters(), params))
    assert torch.equal(model(tokens), before)


def test_a_lone_linear_is_converted_and_returned():
    layer = convert(nn.Linear(32, 32))
    assert type(layer) is Linear and layer.lowprec_plan[""].recipe.fprop == "nvfp4"
    assert type(unconvert(layer)) is nn.Linear


def test_applying_a_plan_again_only_changes_recipes():
    model = convert(TinyGPT(vocab=16, d_model=32, n_blocks=2, n_heads=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(16, (2, 8))).sum().backward()
    opt.step()
    modules = dict(model.named_modules())
    params = list(model.parameters())
    opt_state = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in params}

    replan = Plan.from_json(model.lowprec_plan.to_json())
    replan.layers["blocks.0.fc1"] = LayerPlan("blocks.0.fc1", (128, 32),
                                              Recipe(fprop="fp8", wgrad="bf16"),
                                              reason="re-planned")
    replan["blocks.1.qkv"].recipe = replan["blocks.1.qkv"].recipe.replace(fprop="nvfp4")
    convert(model, plan=replan, recipe=Recipe(rht=False))

    assert all(modules[name] is m for name, m in model.named_modules())
    assert all(p is q for p, q in zip(model.parameters(), params))
    for p in params:
        assert all(torch.equal(v, opt_state[id(p)][k]) for k, v in opt.state[p].items())
    assert model.blocks[0].fc1.recipe == Recipe(fprop="fp8", wgrad="bf16", rht=False)
    assert model.blocks[1].qkv.recipe == Recipe(dgrad="bf16", wgrad="bf16", rht=False)
    assert model.lowprec_plan is replan


def test_a_bad_plan_changes_nothing():
    model = TinyGPT(vocab=16, d_model=32, n_blocks=2, n_heads=2)
    plan = Plan([LayerPlan("blocks.0.qkv", (96, 32), Recipe.uniform("nvfp4"), "x"),
                 LayerPlan("blocks.0.nope", (32, 32), Recipe.uniform("bf16"), "x")])
    with pytest.raises(KeyError, match="blocks.0.nope"):
        convert(model, plan=plan)
    assert type(model.blocks[0].qkv) is nn.Linear
    wrong = Plan([LayerPlan("blocks.0.qkv", (32, 96), Recipe.uniform("bf16"), "x")])
    with pytest.raises(ValueError, match=r"\(32, 96\).*\(96, 32\)"):
        convert(model, plan=wrong)
    with pytest.raises(TypeError, match="LayerNorm"):
        convert(model, plan=Plan([LayerPlan("ln", (1, 1), Recipe.uniform("bf16"), "x")]))


def test_budget_needs_calibration_and_calls_the_planner(monkeypatch):
    model = TinyGPT(vocab=16, d_model=32, n_blocks=2, n_heads=2)
    with pytest.raises(ValueError, match="calibration"):
        convert(model, budget=0.5)
    with pytest.raises(ValueError, match="not both"):
        convert(model, budget=0.5, plan=Plan())
    seen = {}

    def make_plan(model, *, budget, calibration, optimizer, loss_fn, recipe, candidates):
        seen.update(budget=budget, calibration=calibration, recipe=recipe,
                    names=[name for name, _, _ in candidates])
        return Plan([LayerPlan("head", (16, 32), Recipe.uniform("fp8"), "planned")],
                    {"budget": budget})

    monkeypatch.setattr(lowprec.planner, "make_plan", make_plan, raising=False)
    batches = [torch.randint(16, (2, 9))]
    convert(model, budget=0.5, calibration=batches, recipe=Recipe(rht=False))
    assert seen["budget"] == 0.5 and seen["calibration"] is batches
    assert seen["recipe"] == Recipe(rht=False) and "blocks.0.qkv" in seen["names"]
    assert model.head.recipe == Recipe.uniform("fp8", rht=False)
    assert type(model.blocks[0].qkv) is nn.Linear         # not in the plan: untouched


# -- Plan -------------------------------------------------------------------------------

def sample_plan():
    return Plan([
        LayerPlan("blocks.0.qkv", (96, 32), Recipe(wgrad="fp8"), "planned",
                  flops_share=0.75, cost=0.125,
                  stats={"ld": {"nvfp4": 1.5e-3, "fp8": 2.0e-4}, "wd": {"nvfp4": 0.1}}),
        LayerPlan("head", (16, 32), Recipe.uniform("bf16"), "outside the blocks",
                  flops_share=0.25),
    ], meta={"budget": 0.75, "objective": "ld+wd", "device": "cpu", "list": [1, 2.5]})


def test_plan_json_round_trip_is_exact():
    plan = sample_plan()
    text = plan.to_json()
    json.loads(text)                                       # plain JSON
    again = Plan.from_json(text)
    assert again == plan and again.to_json() == text
    assert list(again.layers) == ["blocks.0.qkv", "head"]
    assert isinstance(again["head"].shape, tuple)
    with pytest.raises(ValueError, match="not a lowprec plan"):
        Plan.from_json("{}")


def test_plan_refuses_keys_json_would_change():
    plan = sample_plan()
    plan["head"].stats = {"ld": {4: 0.1}}
    with pytest.raises(TypeError, match=r"stats\['ld'\].*4.*int"):
        plan.to_json()


def test_plan_container_summary_and_table():
    plan = sample_plan()
    assert len(plan) == 2 and "head" in plan and plan["head"].recipe.fprop == "bf16"
    assert [layer.name for layer in plan] == ["blocks.0.qkv", "head"]
    with pytest.raises(KeyError, match="'nope'.*blocks.0.qkv"):
        plan["nope"]
    summary = plan.summary()
    assert summary == pytest.approx({"nvfp4": 0.5, "fp8": 0.25, "bf16": 0.25})
    lines = str(plan).splitlines()
    assert lines[0].split() == ["layer", "shape", "FLOPs", "fprop", "dgrad", "wgrad",
                                "LD", "fp4/fp8", "WD", "fp4/fp8", "cost", "reason"]
    column = lines[0].index("fprop")
    assert set(lines[1]) == {"-", " "}                     # the rule under the header
    assert lines[2][column:].startswith("nvfp4") and lines[3][column:].startswith("bf16")
    assert "1.50e-03/2.00e-04" in lines[2] and "75.0%" in lines[2]
    assert "0.125" in lines[2] and lines[3].index("outside") == lines[0].index("reason")
    assert "nvfp4 50.0%" in lines[4]


def test_layer_plan_validates_and_makes_recipes():
    with pytest.raises(ValueError, match="dgrad.*'int4'"):
        LayerPlan("x", (16, 16), Recipe(fprop="bf16", dgrad="int4", wgrad="bf16"), "r")
    layer = LayerPlan("x", [16, 32], Recipe(fprop="fp8", dgrad="bf16", wgrad="nvfp4"), "r")
    assert layer.shape == (16, 32)
    assert Recipe(weight_2d=False).with_precisions_of(layer.recipe) == \
        Recipe(fprop="fp8", dgrad="bf16", weight_2d=False)


def test_experts_with_a_shape_nvfp4_cannot_take_stay_bf16_and_convert():
    """K = I = 24 for down_proj: forced BF16 with the reason, and the layer still
    converts (the GroupedExperts is built BF16 before the plan's recipes are set). The
    linear router (N = E = 16) is forced BF16 as a router."""
    from lowprec.moe import ROUTER_REASON, GroupedExperts

    class Experts(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_up_proj = nn.Parameter(torch.randn(16, 48, 32) / 8)
            self.down_proj = nn.Parameter(torch.randn(16, 32, 24) / 8)
            self.act_fn = nn.SiLU()

    block = nn.Module()
    block.top_k = 2
    block.gate = nn.Linear(32, 16, bias=False)
    block.experts = Experts()
    model = convert(block)
    plan = model.lowprec_plan
    assert isinstance(model.experts, GroupedExperts)
    assert model.experts.recipes["gate_up_proj"] == Recipe()
    assert "K=24" in plan["experts.down_proj"].reason
    assert plan["experts.down_proj"].precisions() == ("bf16",) * 3
    assert plan["experts.gate_up_proj"].experts == [16, 2]
    assert plan["gate"].reason == ROUTER_REASON and plan["gate"].recipe.fprop == "bf16"
