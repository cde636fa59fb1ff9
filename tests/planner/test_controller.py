"""Re-planning during training: new plan applied, weights and optimizer state untouched."""

import pytest
import torch

from lowprec.planner import Replanner

lowprec = pytest.importorskip("lowprec")


def snapshot(model, opt):
    params = {n: (p, p.detach().clone(), p.grad.clone()) for n, p in model.named_parameters()}
    state = {n: {k: v.clone() for k, v in opt.state[p].items()}
             for n, p in model.named_parameters()}
    return params, state


def test_replan_every_n_steps_changes_only_recipes(tiny_mlp, mlp_batches, mlp_loss):
    model = lowprec.convert(tiny_mlp)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mlp_loss(model, mlp_batches[0]).backward()
    opt.step()
    params, state = snapshot(model, opt)
    rng = torch.get_rng_state()
    seen = []
    replanner = Replanner(model, every=2, budget=0.5, calibration=lambda: mlp_batches,
                          optimizer=opt, loss_fn=mlp_loss, progress=False,
                          on_plan=lambda step, plan: seen.append(step))
    assert replanner.step() is None
    plan = replanner.step()
    assert plan is not None and seen == [2] and model.lowprec_plan is plan
    assert plan.meta["nvfp4_fraction"] >= 0.5
    for layer in plan:
        assert model.get_submodule(layer.name).recipe.precisions() == layer.precisions()
    for name, p in model.named_parameters():
        obj, value, grad = params[name]
        assert p is obj and torch.equal(p, value) and torch.equal(p.grad, grad)
        assert opt.state[p].keys() == state[name].keys()
        for k, v in opt.state[p].items():
            assert torch.equal(v, state[name][k])
    assert torch.equal(torch.get_rng_state(), rng)
    # a second round compares with the applied plan
    replanner.step()
    again = replanner.step()
    assert again.meta["switched"] is not None and seen == [2, 4]


def test_state_dict_round_trip(tiny_mlp, mlp_batches, mlp_loss):
    model = lowprec.convert(tiny_mlp)
    replanner = Replanner(model, every=1, budget=0.25, calibration=mlp_batches,
                          loss_fn=mlp_loss, progress=False)
    plan = replanner.step()
    state = replanner.state_dict()
    other = Replanner(model, every=1, budget=0.25, calibration=mlp_batches,
                      loss_fn=mlp_loss, progress=False)
    other.load_state_dict(state)
    assert other.steps == 1 and model.lowprec_plan.to_json() == plan.to_json()


def test_arguments_are_checked(tiny_mlp, mlp_batches):
    with pytest.raises(ValueError, match="every"):
        Replanner(tiny_mlp, every=0, budget=0.5, calibration=mlp_batches)
    with pytest.raises(ValueError, match="calibration"):
        Replanner(tiny_mlp, every=1, budget=0.5, calibration=None)


class FakeClock:
    """A clock the test moves: each training step takes ``step`` seconds, a re-plan
    ``replan`` seconds."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_auto(steps, plan_meta=None, step=1.0, replan=5.0):
    clock = FakeClock()
    model = torch.nn.Sequential(torch.nn.Linear(16, 16))
    if plan_meta is not None:
        model.lowprec_plan = type("Plan", (), {"meta": plan_meta})()
    replanner = Replanner(model, budget=0.5, calibration=[None], clock=clock)
    at = []

    def fake_replan():
        clock.now += replan
        at.append(replanner.steps)
        return "plan"

    replanner.replan = fake_replan
    for _ in range(steps):
        clock.now += step          # the training step
        replanner.step()
    return replanner, at


def test_auto_interval_keeps_replanning_within_two_percent():
    # Cost unknown at first: the first re-plan after 1000 steps (+20 timed), then every
    # ceil(5 s / (0.02 * 1 s)) = 250 steps.
    replanner, at = run_auto(3000)
    assert at[:3] == [1020, 1270, 1520]
    assert replanner.every == 250 and replanner.overhead <= 0.02


def test_auto_interval_from_the_plans_own_statistics_time():
    # The plan made by convert/make_plan says its statistics took 4 s and its ILP 1 s:
    # the interval is set after the 20 timed steps, 250 steps, before any re-plan.
    replanner, at = run_auto(1000, plan_meta={"stats_seconds": 4.0, "ilp_seconds": 1.0})
    assert at == [270, 520, 770]
    assert 0.0 < replanner.overhead <= 0.02


def test_fixed_interval_resumes_on_its_multiples(tiny_mlp, mlp_batches):
    replanner = Replanner(tiny_mlp, every=4, budget=0.5, calibration=mlp_batches)
    replanner.load_state_dict({"steps": 6, "plan": None})      # saved without next_replan
    assert replanner.next_replan == 8


def test_max_overhead_is_checked(tiny_mlp, mlp_batches):
    with pytest.raises(ValueError, match="max_overhead"):
        Replanner(tiny_mlp, budget=0.5, calibration=mlp_batches, max_overhead=2)
