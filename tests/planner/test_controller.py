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


# -- checked at construction (issue 22: with every="auto" the first re-plan can come
# 1,000+ steps into training) ----------------------------------------------------------

def _no_replan(*args, **kwargs):
    raise AssertionError("the check must not need a re-plan")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"calibration": None}, ValueError, r"needs calibration batches"),
    ({"calibration": torch.randn(32, 32)}, TypeError,
     r"calibration is a bare tensor of shape \(32, 32\).*wrap it: calibration=\[x\]"),
    ({"calibration": iter([1, 2])}, ValueError,
     r"calibration is an iterator \(list_iterator\).*use up"),
    ({"calibration": 5}, TypeError, r"calibration must be a callable .*got 5"),
    ({"on_plan": "print"}, TypeError, r"on_plan must be a callable or None; got 'print'"),
    ({"apply": 1}, TypeError, r"apply must be a callable or None; got 1"),
    ({"switch_penalty": float("nan")}, ValueError, r"switch_penalty must be a finite number "
                                                   r">= 0.*got nan"),
    ({"switch_penalty": -0.1}, ValueError, r"switch_penalty must be a finite number >= 0.*"
                                           r"got -0\.1"),
    ({"switch_penalty": "0.05"}, ValueError, r"switch_penalty must be a number; got '0\.05'"),
    ({"switch_penalty": None}, ValueError, r"switch_penalty must be a number; got None"),
    ({"tie": [["fc1", "fc2"]]}, TypeError, r"unknown keyword argument\(s\) \['tie'\]; the "
                                           r"options it passes on to make_plan are \[.*'ties'"),
    ({"previous": None}, TypeError, r"Replanner sets \['previous'\] itself"),
    ({"ties": [["fc1", "fc9"]]}, ValueError, r"ties name layers that are not candidates: "
                                             r"\['fc9'\]"),
    ({"ties": "fc1"}, ValueError, r"ties must be a list of groups"),
    ({"ties": [["fc1"], ["fc1", "fc2"]]}, ValueError, r"'fc1' is in two tie groups"),
    ({"gemm_groups": [["fprop"], ["wgrad"]]}, ValueError, r"gemm_groups must split"),
    ({"objective": "snipp"}, ValueError, r"objective must be one of .*'snipp'"),
    ({"budget": 2}, ValueError, r"budget=2 is out of range"),
])
def test_bad_arguments_fail_at_construction(tiny_mlp, mlp_batches, monkeypatch, kwargs,
                                            error, message):
    from lowprec.planner import controller
    monkeypatch.setattr(controller, "make_plan", _no_replan)
    args = {"budget": 0.5, "calibration": mlp_batches, **kwargs}
    with pytest.raises(error, match=message):
        Replanner(tiny_mlp, **args)


def test_good_arguments_are_accepted(tiny_mlp, mlp_batches):
    """The checks refuse only what is wrong: ties of real layers, a list, a generator
    function, numbers of any real type."""
    Replanner(tiny_mlp, budget=0.5, calibration=lambda: iter(mlp_batches),
              ties=[["fc1", "fc2"]], switch_penalty=torch.tensor(0.0), on_plan=print,
              budget_kind="time", gemm_groups=[["fprop", "dgrad", "wgrad"]])
    Replanner(tiny_mlp, budget=0.5, calibration=tuple(mlp_batches), switch_penalty=1)
