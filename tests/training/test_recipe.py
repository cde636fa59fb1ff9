"""Recipe: NUMERICS 7 defaults, validation, serialisation."""

import json

import pytest
import torch

import lowprec
from lowprec.discovery import find_layers
from lowprec.policy import default_plan
from lowprec.names import shape_problem
from lowprec.recipe import Recipe
from lowprec.reference import DEFAULT_SIGN_VECTOR


def test_defaults_are_numerics_section_7():
    r = Recipe()
    assert r.precisions() == ("nvfp4", "nvfp4", "nvfp4")
    assert r.rht and r.stochastic_rounding and r.weight_2d
    assert r.sign_vector is None
    assert r.quantized


def test_uniform_and_replace():
    assert Recipe.uniform("fp8").precisions() == ("fp8",) * 3
    assert not Recipe.uniform("bf16").quantized
    r = Recipe().replace(wgrad="bf16", stochastic_rounding=False)
    assert r.precisions() == ("nvfp4", "nvfp4", "bf16") and not r.stochastic_rounding


@pytest.mark.parametrize("field, value, error, words", [
    ("fprop", "fp4", ValueError, ["Recipe.fprop", "'fp4'"]),
    ("wgrad", "BF16", ValueError, ["Recipe.wgrad", "'BF16'"]),
    ("rht", 1, TypeError, ["Recipe.rht", "int"]),
    ("weight_2d", "yes", TypeError, ["Recipe.weight_2d", "'yes'"]),
    ("sign_vector", (1, -1, 2) + (1,) * 13, ValueError, ["sign_vector", "2"]),
    ("sign_vector", (1,) * 15, ValueError, ["16 entries"]),
])
def test_validation_names_the_bad_value(field, value, error, words):
    with pytest.raises(error) as info:
        Recipe(**{field: value})
    for word in words:
        assert word in str(info.value)


def test_sign_vector_is_normalised_so_equal_recipes_hash_equal():
    signs = list(DEFAULT_SIGN_VECTOR)
    a, b = Recipe(sign_vector=signs), Recipe(sign_vector=tuple(signs))
    assert a == b and hash(a) == hash(b) and a.sign_vector == DEFAULT_SIGN_VECTOR


@pytest.mark.parametrize("recipe", [
    Recipe(),
    Recipe(fprop="fp8", dgrad="bf16", wgrad="nvfp4", rht=False, weight_2d=False),
    Recipe(sign_vector=[-s for s in DEFAULT_SIGN_VECTOR], stochastic_rounding=False),
])
def test_dict_and_json_round_trip(recipe):
    data = recipe.to_dict()
    assert json.loads(json.dumps(data)) == data          # JSON types only
    assert Recipe.from_dict(data) == recipe
    assert Recipe.from_json(recipe.to_json()) == recipe


def test_from_dict_rejects_unknown_keys_and_fills_defaults():
    with pytest.raises(ValueError, match="unknown Recipe field.*'sr'"):
        Recipe.from_dict({"sr": True})
    assert Recipe.from_dict({"wgrad": "fp8"}) == Recipe(wgrad="fp8")


def test_str_is_readable():
    assert str(Recipe()) == "nvfp4/nvfp4/nvfp4 (rht sr 2d)"
    assert str(Recipe.uniform("fp8")) == "fp8/fp8/fp8"


@pytest.mark.parametrize("n, k, bad", [(32, 48, None), (16, 16, None), (32, 20, "K=20"),
                                       (40, 32, "N=40"), (8, 8, "N=8, K=8")])
def test_shape_problem_is_the_one_rule_for_quantized_shapes(n, k, bad):
    """NUMERICS 10: K and N multiples of 16, else a reason naming the shape. The default
    plan's reason and Linear's refusal both follow it (mutation tried: ``k % 32`` in
    ``shape_problem`` fails the (32, 48) and (16, 16) cases)."""
    problem = shape_problem(n, k)
    assert problem is None if bad is None else bad in problem
    model = torch.nn.Sequential(torch.nn.Linear(k, n))
    plan = default_plan(find_layers(model))
    if bad:
        assert plan["0"].reason == problem
    else:
        assert plan["0"].precisions() == ("nvfp4",) * 3
    if bad:
        with pytest.raises(ValueError, match=bad):
            lowprec.Linear(k, n)
    else:
        lowprec.Linear(k, n)
