"""The usual mistakes with ``convert`` give an early, clear error or a warning (issue 19).

Each test here failed on the code before the fix (checked by running it there):
the filter was called ``(name, module)``, nothing warned when no layer was quantized, a
bare calibration tensor was read as one-row batches, a float64 model failed only inside
``quantize_row_col`` at the first forward, and ``lowprec.disabled`` did not exist.
"""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowprec
from lowprec.conv1d import Conv1D
from lowprec.moe import GroupedExperts
from lowprec.recipe import Recipe


class Block(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(x)))


class Net(nn.Module):
    """Four blocks (the default plan quantizes the first three) and an LM-head-like
    linear outside them."""

    def __init__(self, d=32, n_blocks=4):
        super().__init__()
        self.blocks = nn.ModuleList([Block(d) for _ in range(n_blocks)])
        self.head = nn.Linear(d, 16)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def net(seed=0, **kwargs):
    torch.manual_seed(seed)
    return Net(**kwargs)


def loss_fn(model, batch):
    return model(batch).float().pow(2).mean()


def quantized_names(model):
    return {layer.name for layer in model.lowprec_plan if layer.recipe.fprop != "bf16"}


# -- filter_fn takes (module, fqn), torchao's order -------------------------------------

def test_filter_gets_the_module_then_its_name():
    seen = []

    def keep(module, fqn):
        seen.append((type(module), fqn))
        return fqn != "blocks.0.fc1"

    model = lowprec.convert(net(), filter_fn=keep)
    assert (nn.Linear, "blocks.0.fc1") in seen
    assert model.lowprec_plan["blocks.0.fc1"].reason == "filtered"
    assert quantized_names(model) == {"blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2",
                                      "blocks.2.fc1", "blocks.2.fc2"}


def test_a_torchao_filter_works_as_written():
    """torchao's ``module_filter_fn(module, fqn)``, e.g. on the module's type and name."""
    model = lowprec.convert(net(), filter_fn=lambda mod, fqn: isinstance(mod, nn.Linear)
                            and "fc2" not in fqn)
    assert quantized_names(model) == {"blocks.0.fc1", "blocks.1.fc1", "blocks.2.fc1"}


@pytest.mark.parametrize("swapped, raised", [
    (lambda name, module: name.startswith("blocks"), "AttributeError"),
    (lambda name, module: "head" not in name, "TypeError"),
])
def test_a_filter_in_the_other_order_is_refused_naming_the_layer(swapped, raised):
    model = net()
    with pytest.raises(TypeError, match=rf"filter_fn raised {raised}.* on layer "
                                        rf"'blocks.0.fc1' \(Linear\).*filter_fn\(module, "
                                        rf"fqn\) -> bool"):
        lowprec.convert(model, filter_fn=swapped)
    assert type(model.blocks[0].fc1) is nn.Linear                 # nothing changed


@pytest.mark.parametrize("result", ["blocks.0.fc1", None, 1, torch.tensor(True)])
def test_a_filter_returning_no_bool_is_refused(result):
    with pytest.raises(TypeError, match=r"filter_fn returned .* on layer 'blocks.0.fc1'.*"
                                        r"must return a bool.*filter_fn\(module, fqn\)"):
        lowprec.convert(net(), filter_fn=lambda module, fqn: result)


def test_a_numpy_bool_is_a_bool():
    model = lowprec.convert(net(), filter_fn=lambda module, fqn: np.bool_(fqn != "head"))
    assert len(quantized_names(model)) == 6


def test_the_planner_gets_the_filter_in_the_same_order():
    batches = [torch.randn(8, 32, generator=torch.Generator().manual_seed(i))
               for i in range(2)]
    model = lowprec.convert(net(), budget=0.3, calibration=batches, loss_fn=loss_fn,
                            filter_fn=lambda module, fqn: fqn != "blocks.1.fc1")
    assert model.lowprec_plan["blocks.1.fc1"].reason == "forced bf16: filtered"
    with pytest.raises(TypeError, match="filter_fn raised AttributeError"):
        lowprec.convert(net(), budget=0.3, calibration=batches, loss_fn=loss_fn,
                        filter_fn=lambda name, module: name.endswith("fc1"))


# -- a warning when nothing is quantized, counting why ----------------------------------

def test_a_filter_that_keeps_everything_bf16_is_named_in_a_warning():
    """The swapped-order filter that fails no call: ``isinstance(fqn, nn.Linear)``."""
    with pytest.warns(UserWarning, match=r"the default plan leaves no layer in low "
                                         r"precision.*9 x filtered by filter_fn") as record:
        model = lowprec.convert(net(), filter_fn=lambda name, module:
                                isinstance(module, nn.Linear))
    assert len(record) == 1
    assert quantized_names(model) == set()


def test_the_warning_counts_each_reason():
    with pytest.warns(UserWarning, match=r"no layer in low precision.*: 6 x filtered by "
                                         r"filter_fn.*; 2 x in the last 1 of 4 blocks.*; "
                                         r"1 x outside the repeated block lists"):
        lowprec.convert(net(), filter_fn=lambda module, fqn: not fqn.startswith(
            ("blocks.0", "blocks.1", "blocks.2")))


def test_shapes_not_multiple_of_16_are_counted():
    model = nn.Sequential(nn.Linear(20, 32), nn.Linear(32, 40))
    with pytest.warns(UserWarning, match=r"no layer in low precision.*2 x shape \(K or N\) "
                                         r"not a multiple of 16"):
        lowprec.convert(model)


def test_a_one_block_model_is_counted_by_the_plans_reason():
    with pytest.warns(UserWarning, match=r"no layer in low precision.*2 x in the last 1 of 1 "
                                         r"blocks"):
        lowprec.convert(net(n_blocks=1))


def test_the_planners_all_bf16_plan_warns_too():
    batches = [torch.randn(8, 32)]
    with pytest.warns(UserWarning, match=r"the planner's plan leaves no layer in low "
                                         r"precision.*9 x filtered by filter_fn"):
        lowprec.convert(net(), budget=0.0, calibration=batches, loss_fn=loss_fn,
                        filter_fn=lambda module, fqn: False)


def test_no_warning_when_some_layer_is_quantized_or_the_plan_is_given():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lowprec.convert(net())
        bf16 = lowprec.Plan([lowprec.LayerPlan(name, tuple(m.weight.shape),
                                               Recipe.uniform("bf16"), "by hand")
                             for name, m, _ in lowprec.candidate_layers(net())])
        lowprec.convert(net(), plan=bf16)           # a plan given on purpose: no warning


# -- calibration must be an iterable of batches, not a bare tensor ----------------------

def test_a_bare_calibration_tensor_is_refused_saying_how_to_wrap_it():
    model = net()
    with pytest.raises(TypeError, match=r"bare tensor of shape \(32, 32\), which would be "
                                        r"read as 32 batches of shape \(32,\).*"
                                        r"calibration=\[x\]"):
        lowprec.convert(model, budget=0.5, calibration=torch.randn(32, 32), loss_fn=loss_fn)
    assert type(model.blocks[0].fc1) is nn.Linear


def test_the_wrapped_tensor_plans():
    model = lowprec.convert(net(), budget=0.5, calibration=[torch.randn(32, 32)],
                            loss_fn=loss_fn)
    assert model.lowprec_plan.meta["budget"] == 0.5


# -- a weight dtype the quantized GEMMs cannot take: refused at convert ------------------

def test_a_float64_model_is_refused_at_convert_naming_the_layer_and_the_fix():
    model = net().to(torch.float64)
    with pytest.raises(ValueError, match=r"layer 'blocks.0.fc1' gets a quantized recipe but "
                                         r"its weight is torch.float64.*model.float\(\)"):
        lowprec.convert(model)
    assert type(model.blocks[0].fc1) is nn.Linear                 # nothing changed


def test_float64_layers_kept_bf16_are_fine():
    """Only layers that get a quantized recipe need a supported dtype."""
    model = net()
    model.head.double()                                  # outside the blocks: BF16
    model = lowprec.convert(model)
    x = torch.randn(4, 32, dtype=torch.float64)
    assert model.head(x).dtype == torch.float64
    model = net().double()
    with pytest.warns(UserWarning, match="no layer in low precision"):
        model = lowprec.convert(model, filter_fn=lambda module, fqn: False)
    model(torch.randn(4, 32, dtype=torch.float64)).sum().backward()


def test_a_float64_model_is_refused_before_planning():
    model = net().double()
    batches = [torch.randn(8, 32, dtype=torch.float64)]
    calls = []

    def counting_loss(m, batch):
        calls.append(1)
        return loss_fn(m, batch)

    with pytest.raises(ValueError, match=r"layer 'blocks.0.fc1' may get a quantized recipe "
                                         r"from the planner but its weight is "
                                         r"torch.float64"):
        lowprec.convert(model, budget=0.5, calibration=batches, loss_fn=counting_loss)
    assert calls == []                                   # no statistics were gathered


# -- lowprec.disabled: exact high precision, nothing drawn ------------------------------

def test_disabled_is_exactly_f_linear_and_restores_the_recipes():
    plain = net()
    model = lowprec.convert(net())
    before = {name: m.recipe for name, m in model.named_modules()
              if isinstance(m, lowprec.Linear)}
    assert any(r.quantized for r in before.values())
    x = torch.randn(6, 32)
    with lowprec.disabled(model) as inside:
        assert inside is model
        assert all(not m.recipe.quantized for m in model.modules()
                   if isinstance(m, lowprec.Linear))
        got = model(x)
        # Layer by layer as well: each converted layer is F.linear on the same weights.
        fc1 = model.blocks[0].fc1
        assert torch.equal(fc1(x), F.linear(x, fc1.weight, fc1.bias))
    assert torch.equal(got, plain(x))                    # the unconverted model, F.linear
    assert not torch.equal(model(x), got)                # quantized again after
    after = {name: m.recipe for name, m in model.named_modules()
             if isinstance(m, lowprec.Linear)}
    assert after == before


def test_disabled_takes_no_sr_key():
    model = lowprec.convert(net())
    x = torch.randn(6, 32, requires_grad=True)
    # Outside, a training forward of an SR recipe takes a key (so the check can fail).
    counts = lowprec.sr_state_dict(model)
    model(x).sum().backward()
    assert lowprec.sr_state_dict(model) != counts
    counts, state = lowprec.sr_state_dict(model), torch.get_rng_state()
    with lowprec.disabled(model):
        model(x).sum().backward()
    assert lowprec.sr_state_dict(model) == counts
    assert torch.equal(torch.get_rng_state(), state)


def test_disabled_nests_and_restores_on_an_exception():
    model = lowprec.convert(net())
    fc1 = model.blocks[0].fc1
    original = fc1.recipe
    with lowprec.disabled(model):
        with lowprec.disabled(model):
            assert not fc1.recipe.quantized
        assert not fc1.recipe.quantized                  # still off in the outer block
    assert fc1.recipe is original
    with pytest.raises(RuntimeError, match="boom"):
        with lowprec.disabled(model):
            raise RuntimeError("boom")
    assert fc1.recipe is original


class Experts(nn.Module):
    """transformers 5.x experts layout (``gate_up_proj [E, 2I, H]``, ``down_proj``)."""

    def __init__(self, e=4, h=32, i=32):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.gate_up_proj = nn.Parameter(torch.randn(e, 2 * i, h, generator=gen) / 8)
        self.down_proj = nn.Parameter(torch.randn(e, h, i, generator=gen) / 8)
        self.act_fn = nn.SiLU()


def test_disabled_covers_grouped_experts_and_conv1d():
    transformers = pytest.importorskip("transformers")
    conv1d_cls = transformers.pytorch_utils.Conv1D
    torch.manual_seed(0)
    conv = conv1d_cls(48, 32)
    ours = Conv1D(conv, Recipe())
    grouped = GroupedExperts(Experts(), {"gate_up_proj": Recipe(), "down_proj": Recipe()})
    high = GroupedExperts(Experts(), {p: Recipe.uniform("bf16")
                                      for p in ("gate_up_proj", "down_proj")})
    holder = nn.ModuleDict({"conv": ours, "experts": grouped})
    x = torch.randn(9, 32)
    gen = torch.Generator().manual_seed(1)
    index = torch.stack([torch.randperm(4, generator=gen)[:2] for _ in range(9)])
    weights = torch.rand(9, 2, generator=gen)
    with lowprec.disabled(holder):
        assert torch.equal(ours(x), conv(x))
        assert torch.equal(grouped(x, index, weights), high(x, index, weights))
    assert ours.recipe == Recipe()
    assert grouped.recipes == {"gate_up_proj": Recipe(), "down_proj": Recipe()}
