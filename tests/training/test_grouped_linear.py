"""lowprec.grouped_linear and lowprec.moe.GroupedExperts against per-expert compositions
of lowprec.linear (the existing Linear numerics), bit for bit.

Mutations tried (each made a test here fail): experts visited in reverse order (the SR
keys are then drawn in another order: test_grouped_equals_per_expert_linears); empty
experts skipped instead of run on zero rows (every later expert draws another key);
``route`` ordering rows by token instead of (slot, token) (the route test and the
GroupedExperts composition fail: wgrad's RHT and SR see the rows in another order).
``weight[e]`` indexing instead of ``unbind`` does not change bits (it only costs
memory), so no test pins it.
"""

import json

import pytest
import torch
import torch._dynamo

from lowprec import bench_schema
from lowprec.grouped import grouped_linear
from lowprec.linear_layer import linear
from lowprec.moe import ConcatenatedGateUp, GroupedExperts, experts_adapter, route
from lowprec.recipe import Recipe
from lowprec import sr_keys
from lowprec.sr_keys import SRStream

from . import sr_oracle

RECIPES = [Recipe(), Recipe(wgrad="fp8"), Recipe(fprop="fp8", dgrad="bf16"),
           Recipe.uniform("bf16")]
# Uneven routing with an empty expert; one token; every row on one expert.
COUNTS = [[10, 0, 25, 5], [0, 1, 0, 0], [0, 0, 0, 40]]


def run(fn, x, weight, out_grad, seed=11):
    """Output and input/weight gradients of ``fn(x, weight)``, SR keys fixed by ``seed``."""
    x = x.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    y = fn(x, weight)
    y.backward(out_grad)
    return y.detach(), x.grad, weight.grad


def expert_streams(n):
    """Fresh SR streams for n experts (their keys depend only on the names)."""
    return [SRStream(f"experts[{e}]") for e in range(n)]


def per_expert(counts, recipe):
    """The reference: one lowprec.linear per expert on its rows, each with the stream of
    its expert."""
    def fn(x, weight):
        outs, start = [], 0
        for e, (n, stream) in enumerate(zip(counts, expert_streams(len(counts)))):
            outs.append(linear(x[start:start + n], weight[e], recipe=recipe, sr_stream=stream))
            start += n
        return torch.cat(outs)
    return fn


@pytest.mark.parametrize("recipe", RECIPES, ids=str)
@pytest.mark.parametrize("counts", COUNTS, ids=str)
def test_grouped_equals_per_expert_linears(recipe, counts):
    gen = torch.Generator().manual_seed(sum(counts) + len(str(recipe)))
    x = torch.randn(sum(counts), 32, generator=gen)
    weight = torch.randn(4, 48, 32, generator=gen) * 0.1
    out_grad = torch.randn(sum(counts), 48, generator=gen)
    got = run(lambda a, w: grouped_linear(a, w, torch.tensor(counts), recipe=recipe,
                                          sr_streams=expert_streams(len(counts))),
              x, weight, out_grad)
    want = run(per_expert(counts, recipe), x, weight, out_grad)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    dw = got[2]
    for e, n in enumerate(counts):
        if n == 0:                                   # no tokens: no weight gradient
            assert torch.equal(dw[e], torch.zeros_like(dw[e]))
    if recipe.quantized:                             # the recipe really quantizes
        assert not torch.equal(got[0], torch.cat(
            [x[sum(counts[:e]):sum(counts[:e + 1])] @ weight[e].t() for e in range(4)]))


def test_bad_arguments_name_the_value():
    x, weight = torch.randn(6, 32), torch.randn(2, 48, 32)
    with pytest.raises(ValueError, match=r"counts \[2, 3\] must be >= 0 and sum to the 6"):
        grouped_linear(x, weight, torch.tensor([2, 3]))
    with pytest.raises(ValueError, match=r"one entry per expert \(E=2\)"):
        grouped_linear(x, weight, torch.tensor([6]))
    with pytest.raises(ValueError, match=r"one entry per expert \(E=2\); got 1 entries"):
        grouped_linear(x, weight, [6])                  # counts as a list of sizes
    with pytest.raises(ValueError, match=r"counts \[4, 3\] must be >= 0"):
        grouped_linear(x, weight, [4, 3])
    with pytest.raises(TypeError, match="integer tensor"):
        grouped_linear(x, weight, torch.tensor([3.0, 3.0]))
    with pytest.raises(ValueError, match=r"weight \[E, N, K\]"):
        grouped_linear(x, weight[0], torch.tensor([6]))
    with pytest.raises(ValueError, match="N=40"):
        grouped_linear(x, torch.randn(2, 40, 32), torch.tensor([3, 3]), name="moe.up")


def test_compiled_grouped_linear_has_no_graph_break_and_equals_eager(capture_scalar_outputs):
    """fullgraph compilation needs dynamo to capture the data-dependent counts."""
    torch._dynamo.reset()
    compiled = torch.compile(grouped_linear, fullgraph=True)
    gen = torch.Generator().manual_seed(5)
    x, weight = torch.randn(40, 32, generator=gen), torch.randn(4, 48, 32, generator=gen)
    out_grad = torch.randn(40, 48, generator=gen)
    for counts in COUNTS:
        rows, counts = sum(counts), torch.tensor(counts)
        args = (x[:rows], weight, out_grad[:rows])
        got = run(lambda a, w: compiled(a, w, counts, sr_streams=expert_streams(4)), *args)
        want = run(lambda a, w: grouped_linear(a, w, counts, sr_streams=expert_streams(4)),
                   *args)
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    torch._dynamo.reset()


# -- GroupedExperts ---------------------------------------------------------------------

class Experts(torch.nn.Module):
    """The transformers 5.x experts layout, written here (no transformers needed):
    ``gate_up_proj [E, 2I, H]``, ``down_proj [E, H, I]``, ``act_fn``."""

    def __init__(self, e=4, h=32, i=32):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.gate_up_proj = torch.nn.Parameter(torch.randn(e, 2 * i, h, generator=gen) / 8)
        self.down_proj = torch.nn.Parameter(torch.randn(e, h, i, generator=gen) / 8)
        self.act_fn = torch.nn.SiLU()


def routing(tokens, e=4, k=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(e, generator=gen)[:k] for _ in range(tokens)])
    weights = torch.rand(tokens, k, generator=gen)
    return index, weights / weights.sum(-1, keepdim=True)


def test_route_sorts_rows_by_expert_then_slot_then_token():
    index = torch.tensor([[2, 0], [0, 1], [2, 1]])     # tokens 0..2, k = 2
    token, slot, counts = route(index, 4)
    assert counts.tolist() == [2, 2, 2, 0]
    # expert 0: (slot 0, token 1), (slot 1, token 0); expert 1: (1, 1), (1, 2); ...
    assert list(zip(token.tolist(), slot.tolist())) == [(1, 0), (0, 1), (1, 1), (2, 1),
                                                        (0, 0), (2, 0)]


def test_grouped_experts_equal_a_per_expert_composition_of_linears():
    experts = Experts()
    assert experts_adapter(experts) is ConcatenatedGateUp
    recipes = {"gate_up_proj": Recipe(), "down_proj": Recipe(wgrad="fp8")}
    grouped = GroupedExperts(experts, recipes)
    grouped.lowprec_name = "moe"            # its streams: moe.<projection>[<expert>]
    hidden = torch.randn(9, 32, generator=torch.Generator().manual_seed(1))
    index, weights = routing(9)
    out_grad = torch.randn(9, 32, generator=torch.Generator().manual_seed(2))

    def reference(h):
        """Expert by expert (rows (slot, token) ordered), gate_up for all, then down."""
        rows = [[(s, t) for s in range(2) for t in range(9) if index[t, s] == e]
                for e in range(4)]
        up = [linear(h[[t for _, t in r]], experts.gate_up_proj[e],
                     recipe=recipes["gate_up_proj"], sr_stream=SRStream(f"moe.gate_up_proj[{e}]"))
              for e, r in enumerate(rows)]
        out = torch.zeros_like(h)
        mids = []
        for e, r in enumerate(rows):
            gate, lin = up[e].chunk(2, dim=-1)
            mids.append(torch.nn.functional.silu(gate) * lin)
        for e, r in enumerate(rows):
            y = linear(mids[e], experts.down_proj[e], recipe=recipes["down_proj"],
                       sr_stream=SRStream(f"moe.down_proj[{e}]"))
            y = y * torch.stack([weights[t, s] for s, t in r]).reshape(-1, 1)
            out = out.index_add(0, torch.tensor([t for _, t in r], dtype=torch.long), y)
        return out

    results = []
    for fn in (grouped, reference):
        h = hidden.clone().requires_grad_()
        experts.gate_up_proj.grad = experts.down_proj.grad = None
        torch.manual_seed(3)
        y = fn(h, index, weights) if fn is grouped else fn(h)
        y.backward(out_grad)
        results.append((y.detach(), h.grad, experts.gate_up_proj.grad.clone(),
                        experts.down_proj.grad.clone()))
    for got, want in zip(*results):
        assert torch.equal(got, want)
    assert grouped.to_original() is experts
    assert list(grouped.state_dict()) == list(experts.state_dict())


def test_unknown_expert_layouts_are_not_matched():
    odd = Experts()
    odd.is_transposed = True                      # transformers' flag for [E, H, 2I]
    assert experts_adapter(odd) is None
    biased = Experts()
    biased.gate_up_proj_bias = torch.nn.Parameter(torch.zeros(4, 64))
    assert experts_adapter(biased) is None
    with pytest.raises(ValueError, match=r"layer down_proj has weight shape \(N=32, K=24\)"):
        GroupedExperts(Experts(i=24))                   # default recipe: NVFP4
    grouped = GroupedExperts(Experts(i=24), {p: Recipe.uniform("bf16")
                                             for p in ConcatenatedGateUp.tensors})
    grouped.lowprec_name = "model.experts"
    with pytest.raises(ValueError, match="model.experts.down_proj"):
        grouped.set_recipes({"down_proj": Recipe()})


def test_grouped_experts_compile_fullgraph_and_equal_eager(capture_scalar_outputs):
    """dynamo, AOT autograd and inductor take the whole layer (routing, data-dependent
    counts, the custom ops) without a graph break, and inductor's code gives eager's
    bits: the quantized GEMMs run in the custom ops either way, the rest is routing and
    element-wise SiLU products that inductor computes as eager does (no reductions).
    Mutant: ``experts_forward`` handing the counts tensor to both projections (each
    grouped_linear calls ``tolist()``, making its own symbols) fails to compile the
    backward ("Could not guard on data-dependent expression")."""
    torch._dynamo.reset()
    experts = Experts()
    grouped = GroupedExperts(experts)
    compiled = torch.compile(grouped, fullgraph=True)
    for tokens in (9, 23):                          # the second shape recompiles
        hidden = torch.randn(tokens, 32, generator=torch.Generator().manual_seed(tokens))
        index, weights = routing(tokens, seed=tokens)
        out_grad = torch.randn(tokens, 32, generator=torch.Generator().manual_seed(1))
        results = []
        counts = sr_keys.state_dict(grouped)     # both runs from the same SR counts
        for fn in (grouped, compiled):
            sr_keys.load_state_dict(grouped, counts)
            h = hidden.clone().requires_grad_()
            experts.gate_up_proj.grad = experts.down_proj.grad = None
            torch.manual_seed(5)
            y = fn(h, index, weights)
            y.backward(out_grad)
            results.append((y.detach(), h.grad, experts.gate_up_proj.grad.clone(),
                            experts.down_proj.grad.clone()))
        for got, want in zip(*results):
            assert torch.equal(got, want)
    torch._dynamo.reset()


def test_bench_grouped_linear_runs(capsys, tmp_path):
    """The benchmark script's whole loop on tiny sizes (nothing measured here), and the
    record it writes follows the benchmark schema."""
    from lowprec.bench import bench_grouped_linear as bench

    record = tmp_path / "record.json"
    bench.main(["--experts", "3", "--tokens", "8", "--k", "16", "--n", "16", "--steps", "1",
                "--warmup", "0", "--out", str(record)])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["grouped", "loop-lowprec",
                                                        "loop-nn.Linear"]
    rows = json.loads(record.read_text())["rows"]
    assert [r["name"] for r in rows] == ["grouped", "loop-lowprec", "loop-nn.Linear"]
    assert all(bench_schema.check_row(r) for r in rows)


# -- early, clear errors (issue 22) -------------------------------------------------------

@pytest.mark.parametrize("counts, error, message", [
    (None, TypeError, r"counts must be an integer tensor \[E\] or a list of E ints; got None"),
    ("33", TypeError, r"counts must be an integer tensor \[E\] or a list of E ints; got '33'"),
    (["3", "3"], TypeError, r"counts must be ints \(rows per expert\); got '3' in"),
    ([3.0, 3.0], TypeError, r"counts must be ints \(rows per expert\); got 3\.0"),
    ([True, 5], TypeError, r"counts must be ints \(rows per expert\); got True"),
    # Mutant #6 (issue 22): a bool tensor accepted -> it reaches the sum check instead.
    (torch.tensor([True, True]), TypeError,
     r"counts must be an integer tensor; got torch\.bool"),
    (torch.tensor([3.0, 3.0]), TypeError, r"integer tensor; got torch\.float32"),
    # Mutant #6: the negative-count check removed -> [-2, 8] sums to 6 and fails in
    # torch's split with torch's own message.
    ([-2, 8], ValueError, r"counts \[-2, 8\] must be >= 0; expert 0 has -2 rows"),
    (torch.tensor([8, -2]), ValueError, r"counts \[8, -2\] must be >= 0; expert 1 has -2"),
])
def test_bad_counts_are_refused_before_any_work(counts, error, message):
    x, weight = torch.randn(6, 32), torch.randn(2, 48, 32)
    with pytest.raises(error, match=message):
        grouped_linear(x, weight, counts)


@pytest.mark.parametrize("recipe", ["nvfp4", {"fprop": "fp8"}, 4])
def test_a_recipe_that_is_not_a_recipe_is_a_type_error(recipe):
    """As ``lowprec.linear`` says it (before: AttributeError on 'str' ... 'uses')."""
    x, weight = torch.randn(6, 32), torch.randn(2, 48, 32)
    with pytest.raises(TypeError, match=r"recipe must be a lowprec\.Recipe; got "
                                        + type(recipe).__name__):
        grouped_linear(x, weight, [3, 3], recipe=recipe)
    with pytest.raises(TypeError, match=r"recipe must be a lowprec\.Recipe"):
        linear(x, weight[0], recipe=recipe)


@pytest.mark.parametrize("counts", [[], torch.tensor([], dtype=torch.int64)])
def test_no_experts_is_a_clear_error(counts):
    with pytest.raises(ValueError, match=r"at least one expert; got weight \(0, 48, 32\) "
                                         r"\(E=0\)"):
        grouped_linear(torch.randn(0, 32), torch.randn(0, 48, 32), counts)


def test_grouped_experts_refuse_a_routing_for_other_rows():
    """Before: top_k_index for 4 rows with 5 hidden rows gave token 4 zeros, silently."""
    grouped = GroupedExperts(Experts(), {p: Recipe.uniform("bf16")
                                         for p in ConcatenatedGateUp.tensors})
    grouped.lowprec_name = "layers.0.experts"
    index, weights = routing(4)
    with pytest.raises(ValueError, match=r"GroupedExperts layers\.0\.experts: top_k_index "
                                         r"must be \[T, k\] with T = 5 rows.*got \(4, 2\)"):
        grouped(torch.randn(5, 32), index, weights)
    with pytest.raises(ValueError, match=r"top_k_weights must have top_k_index's shape "
                                         r"\(4, 2\); got \(4, 1\)"):
        grouped(torch.randn(4, 32), index, weights[:, :1])
    with pytest.raises(ValueError, match=r"hidden_states must be \[T, H=32\]; got \(4, 16\)"):
        grouped(torch.randn(4, 16), index, weights)
    assert grouped(torch.randn(4, 32), index, weights).shape == (4, 32)


def _with(**changes):
    experts = Experts()
    for key, value in changes.items():
        setattr(experts, key, value)
    return experts


@pytest.mark.parametrize("make, message", [
    (lambda: _with(is_transposed=True), r"is_transposed=True \(this layout needs "
                                        r"is_transposed=False\)"),
    (lambda: _with(has_bias=True), r"has_bias=True"),
    (lambda: _with(is_concatenated=False), r"is_concatenated=False"),
    (lambda: _with(gate_up_proj_bias=torch.nn.Parameter(torch.zeros(4, 64))),
     r"Parameters must be exactly \('gate_up_proj', 'down_proj'\); got \['down_proj', "
     r"'gate_up_proj', 'gate_up_proj_bias'\]"),
    (lambda: _with(down_proj=torch.nn.Parameter(torch.zeros(4, 32, 16))),
     r"needs down_proj \[E, H, I\] = \(4, 32, 32\); got \(4, 32, 16\)"),
    (lambda: _with(gate_up_proj=torch.nn.Parameter(torch.zeros(0, 64, 32)),
                   down_proj=torch.nn.Parameter(torch.zeros(0, 32, 32))), r"no experts"),
])
def test_grouped_experts_built_directly_run_the_adapters_layout_checks(make, message):
    """Before: GroupedExperts(module) skipped the adapter's checks and failed (or gave
    other numbers) only in forward."""
    module = make()
    assert experts_adapter(module) is None            # the adapter refuses it too
    with pytest.raises(ValueError, match=r"GroupedExperts takes experts in transformers' "
                                         r"default layout.*" + message):
        GroupedExperts(module, {p: Recipe.uniform("bf16") for p in ConcatenatedGateUp.tensors})
    no_act = Experts()
    del no_act.act_fn
    with pytest.raises(ValueError, match="it has no act_fn"):
        GroupedExperts(no_act)


@pytest.mark.parametrize("counts", [[3, 0, 5, 0], [8, 0, 0, 0], [0, 0, 0, 8]])
def test_the_sr_stream_does_not_depend_on_routing(kernel_calls, counts):
    """Each expert's call takes the next key of its own stream, an empty expert
    included: expert e's dY (0 rows for an empty one) is quantized with call 0 of
    stream e, whatever the routing, and each stream has counted exactly one call.
    Expected keys come from tests/training/sr_oracle.py, not from lowprec.
    Mutation tried: no key taken for an expert with no rows (this test fails)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(sum(counts), 32, generator=gen, requires_grad=True)
    weight = torch.randn(len(counts), 16, 32, generator=gen, requires_grad=True)
    streams = [SRStream(f"routing.expert{e}") for e in range(len(counts))]
    torch.manual_seed(11)
    y = grouped_linear(x, weight, counts, sr_streams=streams)
    y.backward(torch.ones_like(y))

    keys = [sr_oracle.key(f"routing.expert{e}", 0, 11) for e in range(len(counts))]
    assert [stream.state()["calls"] for stream in streams] == [1] * len(counts)
    used = [kwargs["seed"] for op, kwargs, _ in kernel_calls
            if op == "quantize_row_col" and kwargs["row_stochastic"]]
    assert sorted(used) == sorted(keys)     # the backward runs the experts in any order
