"""Planner statistics of an expert group: the sum over its experts of the per-expert
linear statistics, one unit per projection, and Conv1D measured as its linear W^T.

The reference is the same computation written with plain nn.Linear layers (statistics
of ordinary linear layers are tested in test_stats.py), so the expected values do not
come from the experts code. Mutation tried: giving every expert's rows the weight of
expert 0 in ``_pieces`` (the two-expert test fails).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowprec.discovery import candidate_layers
from lowprec.planner.layer_stats import FIELDS
from lowprec.planner.stats import collect_stats

H, I = 32, 32


class Experts(nn.Module):
    """transformers 5.x layout: gate_up_proj [E, 2I, H], down_proj [E, H, I]."""

    def __init__(self, n_experts):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.gate_up_proj = nn.Parameter(torch.randn(n_experts, 2 * I, H, generator=gen) / 6)
        self.down_proj = nn.Parameter(torch.randn(n_experts, H, I, generator=gen) / 6)
        self.act_fn = nn.SiLU()

    def forward(self, hidden, top_k_index, top_k_weights):
        """transformers' eager loop (the planner's hook replaces the output anyway)."""
        out = torch.zeros_like(hidden)
        for e in range(self.gate_up_proj.shape[0]):
            token, slot = torch.where(top_k_index == e)
            gate, up = F.linear(hidden[token], self.gate_up_proj[e]).chunk(2, dim=-1)
            y = F.linear(self.act_fn(gate) * up, self.down_proj[e])
            out = out.index_add(0, token, y * top_k_weights[token, slot, None])
        return out


class MoE(nn.Module):
    """Routes every token to the experts ``route(tokens)`` names, weight 1."""

    def __init__(self, n_experts, route):
        super().__init__()
        self.top_k = 1
        self.route = route
        self.experts = Experts(n_experts)

    def forward(self, x, target):
        index = self.route(x.shape[0]).reshape(-1, 1)
        y = self.experts(x, index, torch.ones(x.shape[0], 1))
        return F.mse_loss(y, target)


class Dense(nn.Module):
    """Expert ``e`` of ``moe`` as two nn.Linear layers: the reference."""

    def __init__(self, moe, e):
        super().__init__()
        self.up = nn.Linear(H, 2 * I, bias=False)
        self.down = nn.Linear(I, H, bias=False)
        self.up.weight = nn.Parameter(moe.experts.gate_up_proj.detach()[e].clone())
        self.down.weight = nn.Parameter(moe.experts.down_proj.detach()[e].clone())

    def forward(self, x, target):
        gate, up = self.up(x).chunk(2, dim=-1)
        return F.mse_loss(self.down(F.silu(gate) * up), target)


def batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(40, H, generator=gen), torch.randn(40, H, generator=gen) / 4)]


def stats(model):
    candidates = candidate_layers(model)
    out = collect_stats(model, candidates, batches(), loss_fn=lambda m, b: m(*b),
                        progress=False).layers
    return list(out.values())


def assert_same(got, want):
    assert got.shape == want.shape and got.tokens == want.tokens
    for metric in ("ld", "wd", "dx"):
        a, b = getattr(got, metric), getattr(want, metric)
        assert a.keys() == b.keys() == {"nvfp4", "fp8"}
        for p in a:
            assert a[p] == pytest.approx(b[p], rel=1e-5), (metric, p)


@pytest.mark.parametrize("n_experts", [1, 2])
def test_one_busy_expert_measures_like_two_linears(n_experts):
    """All rows on expert 0 (expert 1, if any, gets none and adds nothing): the two
    expert projections measure exactly like the dense layers they equal."""
    moe = MoE(n_experts, lambda t: torch.zeros(t, dtype=torch.long))
    names = [name for name, _, _ in candidate_layers(moe)]
    assert names == ["experts.gate_up_proj", "experts.down_proj"]
    for got, want in zip(stats(moe), stats(Dense(moe, 0))):
        assert_same(got, want)


class DenseSplit(nn.Module):
    """Two experts as four nn.Linear layers, expert ``t % 2`` for token t."""

    def __init__(self, moe):
        super().__init__()
        self.experts = nn.ModuleList(Dense(moe, e) for e in range(2))

    def forward(self, x, target):
        out = torch.zeros_like(x)
        for e, dense in enumerate(self.experts):
            rows = torch.arange(x.shape[0])[e::2]
            gate, up = dense.up(x[rows]).chunk(2, dim=-1)
            out = out.index_add(0, rows, dense.down(F.silu(gate) * up))
        return F.mse_loss(out, target)


def raw_stats(model):
    out = collect_stats(model, candidate_layers(model), batches(),
                        loss_fn=lambda m, b: m(*b), progress=False)
    return {name: dict(zip(FIELDS, row.tolist())) for name, row in zip(out.layers, out.raw)}


def test_two_experts_sum_the_statistics_of_their_linears():
    """Rows split between two experts. The sums that do not involve stochastic
    rounding or the probe noise (drawn per layer) are the sums of the two dense layers':
    token counts, squared outputs and fprop errors (both precisions), and FP8's dgrad
    and wgrad errors; the wgrad norms add because the expert weights are disjoint."""
    moe = MoE(2, lambda t: torch.arange(t) % 2)
    group, dense = raw_stats(moe), raw_stats(DenseSplit(moe))
    fields = ("tokens", "y2", "e2_nvfp4", "e2_fp8", "dx2", "dx_err2_fp8", "dw2",
              "dw_err2_fp8")
    for tensor, layer in (("gate_up_proj", "up"), ("down_proj", "down")):
        got = group[f"experts.{tensor}"]
        for field in fields:
            want = sum(dense[f"experts.{e}.{layer}"][field] for e in range(2))
            assert got[field] == pytest.approx(want, rel=1e-6), (tensor, field)
    assert group["experts.gate_up_proj"]["tokens"] == 40        # T x top_k rows


class ConvNet(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, target):
        return F.mse_loss(torch.tanh(self.layer(x)), target)


def test_conv1d_measures_like_the_linear_of_its_transposed_weight():
    """With AdamW moments too (stored [K, N] for the Conv1D): the WD of both agree.
    Mutation tried: not transposing the moments (the WD of the square weight differs)."""
    transformers = pytest.importorskip("transformers")
    conv = transformers.pytorch_utils.Conv1D(H, H)
    linear = nn.Linear(H, H)
    linear.weight = nn.Parameter(conv.weight.detach().t().clone())
    linear.bias = nn.Parameter(conv.bias.detach().clone())
    results = []
    for model in (ConvNet(conv), ConvNet(linear)):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for x, target in batches():                  # one step: the moments are not 0
            model(x, target).backward()
        optimizer.step()
        out = collect_stats(model, candidate_layers(model), batches(),
                            loss_fn=lambda m, b: m(*b), optimizer=optimizer, progress=False)
        results.append(out.layers["layer"])
    assert results[0].wd_kind == results[1].wd_kind == "adamw"
    assert_same(*results)
