"""Options are checked before any work: the value is named, statistics never start.

Mutation tried: moving ``check_plan_options`` in ``make_plan`` below ``collect_stats``
makes ``test_bad_options_fail_before_statistics`` fail (the loss_fn is called).
"""

import numpy as np
import pytest
import torch

import lowprec
from lowprec.planner import Replanner, make_plan, options
from lowprec.planner.options import BudgetError, OptionError


@pytest.mark.parametrize("budget", [0, 1, 0.75, np.float32(0.5), np.float64(0.25),
                                    np.int64(1), torch.tensor(0.5), np.array(0.5)])
def test_numeric_budgets_are_accepted_as_floats(budget):
    value = options.check_budget(budget)
    assert type(value) is float and value == float(budget)


@pytest.mark.parametrize("budget, kind, message", [
    (1.5, "nvfp4_fraction", r"budget=1.5 is out of range.*\[0, 1\]"),
    (-0.1, "nvfp4_fraction", r"budget=-0.1 is out of range"),
    (float("nan"), "nvfp4_fraction", r"finite number; got nan"),
    (float("inf"), "time", r"finite number; got inf"),
    (torch.tensor(float("nan")), "nvfp4_fraction", r"finite number; got tensor\(nan\)"),
    ("0.5", "nvfp4_fraction", r"finite number; got '0.5'"),
    (True, "nvfp4_fraction", r"finite number; got True"),
    (None, "nvfp4_fraction", r"finite number; got None"),
    (torch.tensor([0.5, 0.5]), "nvfp4_fraction", r"finite number"),
    (0.0, "time", r"budget=0.0 is out of range: a relative time must be > 0"),
    (-1, "time", r"budget=-1 is out of range"),
])
def test_bad_budgets_are_named(budget, kind, message):
    with pytest.raises(BudgetError, match=message):
        options.check_budget(budget, kind)


def test_time_budgets_above_one_are_fine():
    assert options.check_budget(2, "time") == 2.0


@pytest.mark.parametrize("kwargs, message", [
    ({"budget_kind": "watts"}, r"budget_kind must be one of .*got 'watts'"),
    ({"ties": "qkv"}, r"ties must be a list of groups.*got 'qkv'"),
    ({"ties": ["q", "k"]}, r"each tie group .*got 'q'"),
    ({"ties": [["q", "k"], ["k", "v"]]}, r"layer 'k' is in two tie groups"),
    ({"ties": [[]]}, r"non-empty list"),
    ({"time_limit": 0}, r"time_limit must be a positive number of seconds; got 0"),
    ({"time_limit": float("nan")}, r"time_limit .*got nan"),
    ({"gap": -0.01}, r"gap must be a finite number >= 0; got -0.01"),
    ({"gap": "small"}, r"gap must be a number; got 'small'"),
])
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(OptionError, match=message):
        options.check_plan_options(budget=0.5, **kwargs)


def test_recipe_must_be_a_recipe():
    with pytest.raises(TypeError, match="recipe must be a lowprec.Recipe; got str"):
        options.check_plan_options(budget=0.5, recipe="nvfp4")


def test_backend_names_are_checked():
    assert options.check_backend("auto") == "auto"
    assert options.check_backend("reference", "cpu") == "reference"
    with pytest.raises(OptionError, match=r"unknown backend 'bogus'; choose one of"):
        options.check_backend("bogus")
    with pytest.raises(OptionError, match=r"backend 'cuda' cannot run on cpu here"):
        options.check_backend("cuda", "cpu")


class Untouchable:
    """Calibration data and loss_fn that record any use: the checks must come first."""

    def __init__(self):
        self.used = []

    def __iter__(self):
        self.used.append("calibration iterated")
        return iter([])

    def __call__(self, *args):
        self.used.append("called")
        raise AssertionError("statistics started before the options were checked")


BAD = [({"budget": 1.5}, BudgetError), ({"budget": float("nan")}, BudgetError),
       ({"budget": 0.5, "budget_kind": "flops"}, OptionError),
       ({"budget": 0.5, "gap": -1}, OptionError),
       ({"budget": 0.5, "time_limit": -5}, OptionError),
       ({"budget": 0.5, "ties": "fc1"}, OptionError)]


@pytest.mark.parametrize("entry", ["convert", "make_plan", "Replanner"])
@pytest.mark.parametrize("kwargs, error", BAD)
def test_bad_options_fail_before_statistics(tiny_mlp, entry, kwargs, error):
    spy = Untouchable()
    with pytest.raises(error):
        if entry == "convert":
            lowprec.convert(tiny_mlp, calibration=spy, loss_fn=spy, **kwargs)
        elif entry == "make_plan":
            make_plan(tiny_mlp, calibration=spy, loss_fn=spy, **kwargs)
        else:
            Replanner(tiny_mlp, every=1, calibration=spy, loss_fn=spy, **kwargs)
    assert spy.used == []
    assert not any(isinstance(m, lowprec.Linear) for m in tiny_mlp.modules())


def test_a_tensor_budget_plans_like_the_float(tiny_mlp, mlp_batches, mlp_loss):
    plan = make_plan(tiny_mlp, budget=torch.tensor(0.5, dtype=torch.float64),
                     calibration=mlp_batches, loss_fn=mlp_loss)
    assert plan.meta["budget"] == 0.5 and type(plan.meta["budget"]) is float
    assert plan.meta["nvfp4_fraction"] >= 0.5
