"""The planner's statistics on models whose true loss change is computable.

Quadratic losses ``L = 1/(2M) sum_t sum_j a_j (Y_tj - T_tj)^2`` have the known
output Hessian ``diag(a) / M`` per token, so the curvature estimate, LD and the true
loss change ``L(Y + E) - L(Y)`` can be compared exactly.
"""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from lowprec.planner import gemm_error
from lowprec.planner.loss import default_loss
from lowprec.planner.stats import collect_stats
from lowprec.recipe import Recipe

M, K, N = 128, 64, 32
NO_SR = Recipe(stochastic_rounding=False)


def quadratic(a, m=M):
    return lambda model, batch: 0.5 * ((model(batch[0]) - batch[1]).pow(2) * a).sum() / m


def fprop_error(x, w, p):
    return gemm_error.fprop(x, w, p, Recipe()) - x @ w.t()


@pytest.fixture
def layer_and_data():
    torch.manual_seed(0)
    layer = nn.Linear(K, N, bias=False)
    x = torch.randn(M, K)
    with torch.no_grad():
        y = layer(x)
    return layer, x, y


def _stats(model, candidates, batches, loss_fn, **kwargs):
    return collect_stats(model, candidates, batches, loss_fn=loss_fn, progress=False,
                         **kwargs).layers


def test_curvature_is_exact_for_isotropic_quadratic(layer_and_data):
    layer, x, y = layer_and_data
    a = torch.full((N,), 2.0)
    target = y + torch.randn(M, N)
    s = _stats(layer, [("l", layer, None)], [(x, target)], quadratic(a))["l"].curvature
    # G' - G = H delta exactly for a quadratic; float32 gradients limit the agreement.
    assert s == pytest.approx(2.0 / M, rel=1e-4)


def test_curvature_within_hutchinson_bound_for_diagonal_curvature(layer_and_data):
    layer, x, y = layer_and_data
    a = torch.linspace(0.5, 2.0, N)
    s = _stats(layer, [("l", layer, None)], [(x, y)], quadratic(a))["l"].curvature
    # s = sum a_i z_i^2 / (M sum z_i^2): a z^2-weighted mean of the curvatures, so it lies in
    # [min a, max a] / M, and its relative standard deviation is about
    # sqrt(2 / n) * std(a) / mean(a) for n = M * N Gaussian probes.
    n = M * N
    sd = math.sqrt(2 / n) * float(a.std() / a.mean())
    assert float(a.min()) / M <= s <= float(a.max()) / M
    assert abs(s / (float(a.mean()) / M) - 1) < 5 * sd


@pytest.mark.parametrize("curvature", ["isotropic", "diagonal"])
def test_ld_within_10_percent_of_true_loss_change_near_optimum(layer_and_data, curvature):
    layer, x, y = layer_and_data
    a = torch.full((N,), 2.0) if curvature == "isotropic" else torch.linspace(0.5, 2.0, N)
    target = y + 1e-3 * torch.randn(M, N)          # near the optimum: G is small
    loss_fn = quadratic(a)
    stats = _stats(layer, [("l", layer, None)], [(x, target)], loss_fn)["l"]
    base = 0.5 * ((y - target).pow(2) * a).sum() / M
    for p in ("nvfp4", "fp8"):
        e = fprop_error(x, layer.weight.detach(), p)
        true = float(0.5 * ((y + e - target).pow(2) * a).sum() / M - base)
        assert true > 0
        # Stated factor: within 10% (measured: 0.1% isotropic, 2% diagonal).
        assert 1 / 1.1 <= stats.ld[p] / true <= 1.1, (p, stats.ld[p], true)
        if curvature == "isotropic":          # s is exact: LD >= true by |<G,E>| >= <G,E>
            assert stats.ld[p] >= true * (1 - 1e-4)
    assert stats.ld["nvfp4"] > 4 * stats.ld["fp8"]


def test_ld_bounds_the_loss_change_far_from_optimum(layer_and_data):
    layer, x, y = layer_and_data
    a = torch.full((N,), 1.0)
    target = y + torch.randn(M, N)                  # large G: first order dominates
    stats = _stats(layer, [("l", layer, None)], [(x, target)], quadratic(a))["l"]
    base = 0.5 * (y - target).pow(2).sum() / M
    for p in ("nvfp4", "fp8"):
        e = fprop_error(x, layer.weight.detach(), p)
        true = float(0.5 * (y + e - target).pow(2).sum() / M - base)
        assert abs(true) <= stats.ld[p] * (1 + 1e-4)
    assert stats.ld["nvfp4"] > stats.ld["fp8"]


def test_two_layer_linear_net_cross_layer_noise():
    # Non-diagonal output Hessian for layer 0 (W1^T W1 / M) and noise injected into both
    # layers at once: the cross terms average out (independent probes).
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64, bias=False), nn.Linear(64, 32, bias=False))
    x = torch.randn(M, 64)
    with torch.no_grad():
        h = net[0](x)
        y = net[1](h)
    target = y + 1e-3 * torch.randn_like(y)
    loss_fn = quadratic(torch.ones(32))
    stats = _stats(net, [("0", net[0], None), ("1", net[1], None)], [(x, target)] * 2,
                   loss_fn)
    w0, w1 = net[0].weight.detach(), net[1].weight.detach()
    exact_s0 = float(w1.pow(2).sum()) / M / 64          # tr(W1^T W1) / (M * 64) per element
    assert stats["0"].curvature == pytest.approx(exact_s0, rel=0.1)
    base = 0.5 * (y - target).pow(2).sum() / M
    for p in ("nvfp4", "fp8"):
        e0 = fprop_error(x, w0, p)
        true0 = float(0.5 * ((h + e0) @ w1.t() - target).pow(2).sum() / M - base)
        assert 1 / 1.1 <= stats["0"].ld[p] / true0 <= 1.1


def test_dropout_sees_the_same_masks_in_both_passes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(K, K, bias=False), nn.Dropout(0.5),
                        nn.Linear(K, N, bias=False)).train()
    x = torch.randn(M, K)
    target = torch.randn(M, N)
    stats = _stats(net, [("2", net[2], None)], [(x, target)], quadratic(torch.ones(N)))
    # With different masks G' - G would be dominated by the mask change, not by H delta.
    assert stats["2"].curvature == pytest.approx(1.0 / M, rel=1e-4)


def test_weight_divergence_through_adamw(layer_and_data):
    layer, x, y = layer_and_data
    target = y + torch.randn(M, N)
    loss_fn = quadratic(torch.ones(N))
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(layer, (x, target)).backward()
        opt.step()
    stats = _stats(layer, [("l", layer, None)], [(x, target)], loss_fn, optimizer=opt,
                   recipe=NO_SR)["l"]
    assert stats.wd_kind == "adamw"
    # By hand: the update and its shift by the wgrad error D (SR off: deterministic).
    w = layer.weight.detach()
    g = ((x @ w.t() - target) / M)
    dw = g.t() @ x
    state = opt.state[layer.weight]
    t = int(state["step"]) + 1
    v_hat = (0.95 * state["exp_avg_sq"] + 0.05 * dw.square()) / (1 - 0.95 ** t)
    m_new = 0.9 * state["exp_avg"] + 0.1 * dw
    for p in ("nvfp4", "fp8"):
        d = gemm_error.wgrad(g, x, p, NO_SR) - dw
        expected = float(((0.1 * d) / (v_hat.sqrt() + 1e-8)).norm()
                         / (m_new / (v_hat.sqrt() + 1e-8)).norm())
        assert stats.wd[p] == pytest.approx(expected, rel=1e-4)
    # lr and the bias correction cancel in the ratio
    for group in opt.param_groups:
        group["lr"] = 5.0
    again = _stats(layer, [("l", layer, None)], [(x, target)], loss_fn, optimizer=opt,
                   recipe=NO_SR)["l"]
    assert again.wd["nvfp4"] == pytest.approx(stats.wd["nvfp4"], rel=1e-6)


def test_weight_divergence_fallback_is_relative_gradient_error(layer_and_data):
    layer, x, y = layer_and_data
    target = y + torch.randn(M, N)
    stats = _stats(layer, [("l", layer, None)], [(x, target)], quadratic(torch.ones(N)),
                   recipe=NO_SR)["l"]
    assert stats.wd_kind == "gradient"
    w = layer.weight.detach()
    g = (x @ w.t() - target) / M
    for p in ("nvfp4", "fp8"):
        dw = g.t() @ x
        expected = float((gemm_error.wgrad(g, x, p, NO_SR) - dw).norm() / dw.norm())
        assert stats.wd[p] == pytest.approx(expected, rel=1e-4)
        dx = g @ w
        expected_dx = float((gemm_error.dgrad(g, w, p, NO_SR) - dx).norm() / dx.norm())
        assert stats.dx[p] == pytest.approx(expected_dx, rel=1e-4)
    assert 0.05 < stats.wd["nvfp4"] < 0.5 and stats.wd["fp8"] < stats.wd["nvfp4"] / 3


def test_statistics_touch_nothing(tiny_mlp, mlp_batches, mlp_loss):
    opt = torch.optim.AdamW(tiny_mlp.parameters(), lr=1e-3)
    mlp_loss(tiny_mlp, mlp_batches[0]).backward()
    opt.step()
    params = {n: p.detach().clone() for n, p in tiny_mlp.named_parameters()}
    grads = {n: p.grad.clone() for n, p in tiny_mlp.named_parameters()}
    state = {n: {k: v.clone() for k, v in opt.state[p].items()}
             for n, p in tiny_mlp.named_parameters()}
    rng = torch.get_rng_state()
    candidates = [(n, m, None) for n, m in tiny_mlp.named_children()]
    collect_stats(tiny_mlp, candidates, mlp_batches, loss_fn=mlp_loss, optimizer=opt,
                  progress=False)
    assert torch.equal(torch.get_rng_state(), rng)
    for n, p in tiny_mlp.named_parameters():
        assert torch.equal(p, params[n]) and torch.equal(p.grad, grads[n])
        for k, v in opt.state[p].items():
            assert torch.equal(v, state[n][k])
    assert not tiny_mlp._forward_hooks and not tiny_mlp.fc1._forward_hooks


def test_forced_layers_are_counted_not_measured(tiny_mlp, mlp_batches, mlp_loss):
    candidates = [(n, m, "forced" if n == "head" else None)
                  for n, m in tiny_mlp.named_children()]
    stats = _stats(tiny_mlp, candidates, mlp_batches, mlp_loss)
    assert stats["head"].tokens == 48 and stats["head"].ld == {}
    assert stats["fc1"].tokens == 48 and set(stats["fc1"].ld) == {"nvfp4", "fp8"}
    assert stats["fc1"].batches == 2


def test_layer_called_twice_counts_both_calls():
    torch.manual_seed(0)
    shared = nn.Linear(32, 32)
    model = nn.Sequential(shared, nn.GELU(), shared)
    batches = [(torch.randn(16, 32), torch.randn(16, 32))]
    stats = _stats(model, [("0", shared, None)], batches,
                   lambda m, b: (m(b[0]) - b[1]).pow(2).mean())
    assert stats["0"].tokens == 32


def test_calibration_errors_are_clear(tiny_mlp, mlp_loss):
    candidates = [("fc1", tiny_mlp.fc1, None)]
    with pytest.raises(ValueError, match="calibration batches"):
        collect_stats(tiny_mlp, candidates, None, loss_fn=mlp_loss)
    with pytest.raises(ValueError, match="no batches"):
        collect_stats(tiny_mlp, candidates, [], loss_fn=mlp_loss, progress=False)


def test_default_loss_finds_the_loss():
    class Returns(nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.kind = kind

        def forward(self, x):
            loss = x.sum()
            return {"scalar": loss, "tuple": (loss, x), "dict": {"loss": loss},
                    "object": SimpleNamespace(loss=loss), "tensor": x}[self.kind]

    x = torch.ones(2, 3)
    for kind in ("scalar", "tuple", "dict", "object"):
        assert float(default_loss(Returns(kind), x)) == 6.0
    assert float(default_loss(Returns("scalar"), {"x": x})) == 6.0
    with pytest.raises(TypeError, match="not a loss.*loss_fn=lambda m, b"):
        default_loss(Returns("tensor"), x)


def test_progress_bar_only_where_asked(tiny_mlp, mlp_batches, mlp_loss, capsys):
    """The planner shows its bar when asked (progress=True, on stderr) and is silent
    with progress=False (mutation tried: ignoring ``progress`` made the second run print)."""
    candidates = [(n, m, None) for n, m in tiny_mlp.named_children()]
    total = len(mlp_batches)
    collect_stats(tiny_mlp, candidates, mlp_batches, loss_fn=mlp_loss, progress=True)
    assert f"lowprec planner: statistics {total}/{total}" in capsys.readouterr().err
    collect_stats(tiny_mlp, candidates, mlp_batches, loss_fn=mlp_loss, progress=False)
    assert capsys.readouterr().err == ""