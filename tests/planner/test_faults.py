"""Planner faults: bad loss functions, non-finite statistics, plans JSON cannot hold or
that do not fit, planner inputs without a budget. Each error names what is wrong.

Mutants these tests were run against (each caught):
- ``loss.checked_loss`` calling ``loss_fn`` without the try/except (raw TypeError from deep in
  the model or ``F.cross_entropy``): the two loss_fn-shape tests fail.
- ``stats._one_batch`` without the non-finite loss check, and ``check_finite`` returning
  at once: ``test_nan_loss_names_the_batch`` / ``test_non_finite_layer_statistics_...``
  get a plan instead of an error.
- ``Plan.to_json`` without ``_check_json``'s float check: bare ``NaN`` in the text.
- ``convert`` without the planner-inputs-need-a-budget check, and ``_warn_unplanned``
  never warning: the two convert tests fail.
"""

import json
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lowprec
from lowprec.plan import LayerPlan, Plan
from lowprec.planner import collect_stats, make_plan
from lowprec.planner.layer_stats import FIELDS, finalize
from lowprec.recipe import Recipe

XY_HINT = r"loss_fn=lambda m, b: F\.cross_entropy\(m\(b\[0\]\), b\[1\]\)"


class Net(nn.Module):
    """A classifier that returns logits: the commonest model, with (x, y) batches."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32, 32)
        self.fc2 = nn.Linear(32, 16)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


def xy_batches(n=2):
    gen = torch.Generator().manual_seed(3)
    out = []
    for i in range(n):
        x = torch.randn(16, 32, generator=gen)
        out.append((x, torch.randint(0, 16, (16,), generator=gen)))
    return out


def net():
    torch.manual_seed(0)
    return Net()


def test_xy_batches_without_loss_fn_name_loss_fn_and_show_one():
    """The default loss calls ``model(x, y)`` on a model taking x."""
    with pytest.raises(TypeError, match=r"loss_fn \(omitted.*positional argument.*" + XY_HINT):
        make_plan(net(), budget=0.5, calibration=xy_batches(), progress=False)


def test_cross_entropy_as_loss_fn_names_loss_fn_and_shows_one():
    """``loss_fn=F.cross_entropy`` gets (model, batch)."""
    with pytest.raises(TypeError, match=r"^loss_fn failed: .*Net.*loss_fn\(model, batch\).*"
                                        + XY_HINT):
        make_plan(net(), budget=0.5, calibration=xy_batches(), loss_fn=F.cross_entropy,
                  progress=False)


@pytest.mark.parametrize("returns, message", [
    (lambda m, b: 0.5, r"loss_fn returned float 0\.5, not a scalar loss"),
    (lambda m, b: m(b[0]), r"loss_fn returned a torch\.float32 tensor of shape \(16, 16\)"),
    (lambda m, b: (m(b[0]), b[1]), r"loss_fn returned a tuple of 2"),
    (lambda m, b: None, r"loss_fn returned NoneType None"),
])
def test_loss_fn_results_that_are_no_scalar_loss_are_named(returns, message):
    model = net()
    with pytest.raises(TypeError, match=message + ".*" + XY_HINT):
        collect_stats(model, [("fc1", model.fc1, None)], xy_batches(), loss_fn=returns,
                      progress=False)


def test_detached_loss_is_named():
    model = net()
    with pytest.raises(ValueError, match=r"loss_fn returned a loss that does not require grad"):
        collect_stats(model, [("fc1", model.fc1, None)], xy_batches(),
                      loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]).detach(),
                      progress=False)


def test_loss_fn_that_does_not_run_the_model():
    """Before: ``the choices have zero FLOPs in total`` from the ILP."""
    model = net()
    with pytest.raises(ValueError, match=r"loss_fn\(model, batch\) ran none of the 2 "
                                         r"candidate layers"):
        make_plan(model, budget=0.5, calibration=xy_batches(),
                  loss_fn=lambda m, b: (b[0] * 0).sum().requires_grad_(), progress=False)


def test_nan_loss_names_the_batch():
    """Before: a NaN loss became zero sensitivity and a plan with bare NaN tokens."""
    batches = xy_batches(3)
    batches[1] = (torch.full_like(batches[1][0], float("nan")), batches[1][1])
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) on calibration "
                                                 r"batch 1"):
        make_plan(net(), budget=0.5, calibration=batches,
                  loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]), progress=False)


def test_non_finite_layer_statistics_name_the_layer_and_batch():
    """A finite loss but an infinite input to one layer (whose output the loss ignores):
    that layer's statistics are not finite, and the error says which layer and batch."""
    model = net()

    def loss_fn(m, b):
        m.fc1(torch.full_like(b[0], float("inf")))           # runs, measured, unused
        return m.fc2(b[0]).logsumexp(-1).mean()

    candidates = [("fc1", model.fc1, None), ("fc2", model.fc2, None)]
    with pytest.raises(FloatingPointError, match=r"layer fc1 on calibration batch 0: "
                                                 r".*y2=nan"):
        collect_stats(model, candidates, xy_batches(), loss_fn=loss_fn, progress=False)


def test_finalize_refuses_non_finite_sums():
    """The old ``_ratio`` turned NaN into 0.0 (``nan > 0`` is False): zero sensitivity."""
    raw = torch.ones(1, len(FIELDS), dtype=torch.float64)
    raw[0, FIELDS.index("dw_err2_nvfp4")] = float("nan")
    with pytest.raises(FloatingPointError, match=r"layer fc1 .*dw_err2_nvfp4=nan"):
        finalize(raw, [("fc1", (32, 32), True, True)], [False])


def sample_plan():
    return Plan([LayerPlan("fc1", (32, 32), Recipe(wgrad="bf16"), "planned",
                           flops_share=0.5, cost=0.3, stats={"ld": {"nvfp4": 1e-3}}),
                 LayerPlan("fc2", (16, 32), Recipe.uniform("bf16"), "forced")],
                {"budget": 0.5})


@pytest.mark.parametrize("where", ["stats", "cost", "meta"])
def test_to_json_emits_valid_json_or_names_the_non_finite_value(where):
    plan = sample_plan()
    text = plan.to_json()
    strict = json.loads(text, parse_constant=lambda token: pytest.fail(f"bare {token}"))
    assert strict["layers"][0]["stats"] == {"ld": {"nvfp4": 1e-3}}
    if where == "stats":
        plan["fc1"].stats = {"ld": {"nvfp4": math.nan}}
        match = r"layers\['fc1'\]\.stats\['ld'\]\['nvfp4'\] is nan"
    elif where == "cost":
        plan["fc1"].cost = math.inf
        match = r"layers\['fc1'\]\.cost is inf"
    else:
        plan.meta["relative_time"] = -math.inf
        match = r"meta\['relative_time'\] is -inf"
    with pytest.raises(ValueError, match=match):
        plan.to_json()


def _edit(change):
    data = json.loads(sample_plan().to_json())
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["layers"][0].update(shape=[32.0, 32]), r"fc1.*shape must be two positive"),
    (lambda d: d["layers"][0].update(shape=[32]), r"shape must be two positive ints"),
    (lambda d: d["layers"][0].update(shape=[True, 32]), r"shape must be two positive ints"),
    (lambda d: d["layers"][0].update(shape="32x32"), r"shape must be list; got '32x32'"),
    (lambda d: d["layers"][0].update(name=7), r"layers\[0\].*name must be str; got 7"),
    (lambda d: d["layers"][0].update(cost="0.3"), r"cost must be int or float or NoneType"),
    (lambda d: d["layers"][0].update(flops_share=True), r"flops_share must be int or float"),
    (lambda d: d["layers"][0].update(stats=[]), r"stats must be dict"),
    (lambda d: d["layers"][0].update(fprop="fp4"), r"fprop must be one of"),
    (lambda d: d["layers"][0].pop("wgrad"), r"layers\[0\] \('fc1'\): missing fields \['wgrad'\]"),
    (lambda d: d["layers"][0].update(extra=1), r"unknown fields \['extra'\]"),
    (lambda d: d["layers"].append(dict(d["layers"][0])), r"names layer 'fc1' twice"),
    (lambda d: d["layers"].append(["fc3"]), r"layers\[2\] must be an object"),
    (lambda d: d.pop("layers"), r"lacks \['layers'\]"),
    (lambda d: d.update(meta=[]), r"meta must be an object"),
    (lambda d: d.update(format=2), r"not a lowprec plan of format 1"),
])
def test_from_json_names_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        Plan.from_json(_edit(change))


def test_from_json_of_non_json():
    with pytest.raises(ValueError, match="must be JSON text"):
        Plan.from_json("{'format': 1}")
    assert Plan.from_json(sample_plan().to_json()) == sample_plan()


@pytest.mark.parametrize("kwargs", [{"calibration": [1]}, {"loss_fn": F.mse_loss},
                                    {"optimizer": object()}])
def test_convert_refuses_planner_inputs_without_a_budget(kwargs):
    """Before: ``convert(model, calibration=..., loss_fn=...)`` silently applied the
    default plan, ignoring both."""
    model = net()
    name = next(iter(kwargs))
    with pytest.raises(TypeError, match=rf"convert got {name} but no budget.*default plan"):
        lowprec.convert(model, **kwargs)
    assert type(model.fc1) is nn.Linear                   # nothing changed


def test_convert_warns_naming_layers_a_plan_leaves_out():
    model = net()
    plan = Plan([LayerPlan("fc2", (16, 32), Recipe.uniform("bf16"), "hand-made")])
    with pytest.warns(UserWarning, match=r"no entry for 1 linear layer.*: fc1;"):
        lowprec.convert(model, plan=plan)
    assert type(model.fc1) is nn.Linear and type(model.fc2) is lowprec.Linear
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # a full plan: no warning
        lowprec.convert(net(), plan=Plan([*plan, LayerPlan("fc1", (32, 32),
                                                           Recipe.uniform("bf16"), "x")]))
