"""make_plan end to end on small models: budget met, every layer explained, ties, JSON."""

from fractions import Fraction

import pytest
import torch

from lowprec.planner import BudgetError, make_plan

pytest.importorskip("lowprec.plan")


def nvfp4_fraction(plan):
    """NVFP4 share of all planned GEMM FLOPs, from the LayerPlans alone."""
    return sum(layer.flops_share * layer.precisions().count("nvfp4") / 3
               for layer in plan)


def test_plan_meets_budget_and_explains_every_layer(tiny_mlp, mlp_batches, mlp_loss):
    plan = make_plan(tiny_mlp, budget=0.5, calibration=mlp_batches, loss_fn=mlp_loss,
                     progress=False)
    assert list(plan.layers) == ["fc1", "fc2", "fc3", "head"]
    assert plan["head"].precisions() == ("bf16",) * 3
    assert plan["head"].reason.startswith("forced bf16") and "N=10" in plan["head"].reason
    for layer in plan:
        assert layer.reason and layer.flops_share > 0 and layer.cost is not None
        assert layer.recipe.fprop == layer.recipe.dgrad    # W's quantized copy is shared
        if layer.name != "head":
            assert layer.reason.startswith("ILP: ")
            assert set(layer.stats["ld"]) == set(layer.stats["wd"]) == {"nvfp4", "fp8"}
            assert layer.stats["ld"]["nvfp4"] > 0 and layer.stats["curvature"] >= 0
    assert nvfp4_fraction(plan) >= 0.5 - 1e-12
    assert Fraction(plan.meta["nvfp4_fraction"]) >= Fraction(0.5)
    assert sum(layer.flops_share for layer in plan) == pytest.approx(1.0)
    assert plan.meta["status"] == "optimal" and plan.meta["budget_range"][0] == 0.0
    assert plan.meta["cost_source"] and plan.meta["calibration_batches"] == 2
    assert "fc1" in plan.table()


def test_plan_json_round_trip(tiny_mlp, mlp_batches, mlp_loss):
    from lowprec.plan import Plan
    plan = make_plan(tiny_mlp, budget=0.25, calibration=mlp_batches, loss_fn=mlp_loss,
                     progress=False)
    text = plan.to_json()
    assert Plan.from_json(text).to_json() == text


def test_ties_share_one_precision(tiny_mlp, mlp_batches, mlp_loss):
    for budget in (0.3, 0.6):
        plan = make_plan(tiny_mlp, budget=budget, calibration=mlp_batches, loss_fn=mlp_loss,
                         ties=[["fc1", "fc3"]], progress=False)
        assert plan["fc1"].precisions() == plan["fc3"].precisions()
        assert "[tied: fc1, fc3]" in plan["fc1"].reason
    with pytest.raises(ValueError, match="not candidates"):
        make_plan(tiny_mlp, budget=0.3, calibration=mlp_batches, loss_fn=mlp_loss,
                  ties=[["fc1", "nope"]], progress=False)


def test_tie_with_a_forced_layer_forces_the_group(tiny_mlp, mlp_batches, mlp_loss):
    plan = make_plan(tiny_mlp, budget=0.0, calibration=mlp_batches, loss_fn=mlp_loss,
                     ties=[["fc3", "head"]], progress=False)
    assert plan["fc3"].precisions() == ("bf16",) * 3
    assert plan["fc3"].reason.startswith("forced bf16: tied to head")


def test_unreachable_budget_names_the_range(tiny_mlp, mlp_batches, mlp_loss):
    with pytest.raises(BudgetError, match=r"cannot be met.*reachable .*\[0, 0\.9"):
        make_plan(tiny_mlp, budget=0.99, calibration=mlp_batches, loss_fn=mlp_loss,
                  progress=False)


def test_gemm_groups_and_time_budget(tiny_mlp, mlp_batches, mlp_loss):
    plan = make_plan(tiny_mlp, budget=0.6, calibration=mlp_batches, loss_fn=mlp_loss,
                     budget_kind="time", gemm_groups=[["fprop"], ["dgrad"], ["wgrad"]],
                     progress=False)
    assert plan.meta["relative_time"] <= 0.6
    assert plan.meta["gemm_groups"] == ["fprop", "dgrad", "wgrad"]
    with pytest.raises(ValueError, match="gemm_groups"):
        make_plan(tiny_mlp, budget=0.6, calibration=mlp_batches, loss_fn=mlp_loss,
                  gemm_groups=[["fprop"], ["wgrad"]], progress=False)


def test_switch_penalty_against_previous(tiny_mlp, mlp_batches, mlp_loss):
    first = make_plan(tiny_mlp, budget=0.5, calibration=mlp_batches, loss_fn=mlp_loss,
                      progress=False)
    # Different batches would move the optimum; a large penalty keeps the previous plan.
    other = [(x.flip(0), y.flip(0)) for x, y in mlp_batches]
    sticky = make_plan(tiny_mlp, budget=0.5, calibration=other, loss_fn=mlp_loss,
                       previous=first, switch_penalty=100.0, progress=False)
    assert [l.precisions() for l in sticky] == [l.precisions() for l in first]
    assert sticky.meta["switched"] == 0


def test_relative_error_objective(tiny_mlp, mlp_batches, mlp_loss):
    plan = make_plan(tiny_mlp, budget=0.5, calibration=mlp_batches, loss_fn=mlp_loss,
                     objective="relative_error", progress=False)
    assert plan.meta["objective"] == "relative_error"
    assert "rel fprop" in plan["fc1"].reason
    with pytest.raises(ValueError, match="objective"):
        make_plan(tiny_mlp, budget=0.5, calibration=mlp_batches, objective="vibes")


def test_statistics_are_of_the_high_precision_model(tiny_mlp, mlp_batches, mlp_loss):
    lowprec = pytest.importorskip("lowprec")
    plain = make_plan(tiny_mlp, budget=0.5, calibration=mlp_batches, loss_fn=mlp_loss,
                      progress=False)
    converted = lowprec.convert(tiny_mlp)                      # default plan: NVFP4 recipes
    again = make_plan(converted, budget=0.5, calibration=mlp_batches, loss_fn=mlp_loss,
                      progress=False)
    for a, b in zip(plain, again):
        assert a.stats["ld"] == b.stats["ld"] and a.stats["wd"] == b.stats["wd"]


def test_convert_with_budget_end_to_end(mlp_loss):
    lowprec = pytest.importorskip("lowprec")
    demo = pytest.importorskip("lowprec.demo.model")
    torch.manual_seed(0)
    model = demo.GPT(demo.GPTConfig(d_model=32, n_layer=2, n_head=2, seq_len=16))
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        tokens = torch.randint(0, 256, (4, 17), generator=gen)
        batches.append((tokens[:, :-1], tokens[:, 1:]))
    model = lowprec.convert(model, budget=0.75, calibration=batches,
                            loss_fn=lambda m, b: m(*b))
    plan = model.lowprec_plan
    assert len(plan) == 8 and all(layer.reason for layer in plan)
    assert nvfp4_fraction(plan) >= 0.75 - 1e-12
    for layer in plan:
        module = model.get_submodule(layer.name)
        assert isinstance(module, lowprec.Linear)
        assert module.recipe.precisions() == layer.precisions()
    # re-apply from JSON
    again = lowprec.convert(model, plan=lowprec.Plan.from_json(plan.to_json()))
    assert again.lowprec_plan.to_json() == plan.to_json()
    loss = model(*batches[0])
    loss.backward()
    assert torch.isfinite(loss)


def test_convert_finds_the_layers_once_and_keeps_the_plan_in_memory(
        tiny_mlp, mlp_batches, mlp_loss, monkeypatch):
    """One ``convert(budget=...)`` call walks the model for its weight matmuls once (the
    plan, the planner's candidates and the warnings share them), and a single-process
    plan goes from the solver to the model as it is, never through JSON text.

    Mutants caught: ``_warn_unplanned`` calling ``candidate_layers(model)`` again
    (2 walks); ``make_plan`` returning ``Plan.from_json(plan.to_json())`` without a
    process group (the patched JSON calls raise).
    """
    lowprec = pytest.importorskip("lowprec")
    from lowprec import discovery
    from lowprec.plan import Plan

    walks = []
    walk = discovery.weight_matmuls

    def counted(*args, **kwargs):
        walks.append(1)
        return walk(*args, **kwargs)

    def no_json(*args, **kwargs):
        raise AssertionError("a single-process plan went through JSON")

    monkeypatch.setattr(discovery, "weight_matmuls", counted)
    monkeypatch.setattr(Plan, "to_json", no_json)
    monkeypatch.setattr(Plan, "from_json", classmethod(no_json))
    model = lowprec.convert(tiny_mlp, budget=0.5, calibration=mlp_batches,
                            loss_fn=mlp_loss, progress=False)
    assert len(walks) == 1
    assert model.lowprec_plan["fc1"].recipe == model.fc1.recipe
    walks.clear()
    lowprec.convert(model, plan=model.lowprec_plan)              # applying: one walk too
    assert len(walks) == 1
