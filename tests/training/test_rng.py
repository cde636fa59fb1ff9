"""Stochastic rounding words: never reused, reproducible, resumable (NUMERICS 4.1)."""

import io

import pytest
import torch

import lowprec
from lowprec.conversion import convert

from .tinygpt import TinyGPT, markov_batches, optimizer_steps


def small_gpt(**kwargs):
    torch.manual_seed(0)
    return convert(TinyGPT(vocab=16, d_model=32, n_blocks=3, n_heads=2, seq_len=16,
                           **kwargs))


BATCHES = markov_batches(6, 4, 16, vocab=16)


def trained(seed, n_steps, **model_kwargs):
    model = small_gpt(**model_kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(seed)
    losses = optimizer_steps(model, opt, BATCHES[:n_steps])
    return model, opt, losses


def assert_same_run(a, b):
    (model_a, _, losses_a), (model_b, _, losses_b) = a, b
    assert all(torch.equal(x, y) for x, y in zip(losses_a, losses_b))
    for (name, p), q in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(p, q), name


@pytest.fixture
def sr_calls(kernel_calls):
    """A function giving ``(seed, first counter, counters used)`` of every SR quantization
    the training layer has run: each SR copy made by ``quantize_row_col``."""
    def so_far():
        out = []
        for op, kwargs, (row, col) in kernel_calls:
            if op != "quantize_row_col":
                continue
            # Counters the kernel consumed, from the copies' shapes (never from the
            # offsets the code under test computed): ceil(numel / 4) of each copy.
            if kwargs["row_stochastic"] and row is not None:
                out.append((kwargs["seed"], kwargs["row_offset"], (row[0].numel() * 2 + 3) // 4))
            if kwargs["col_stochastic"] and col is not None:
                out.append((kwargs["seed"], kwargs["col_offset"], (col[0].numel() * 2 + 3) // 4))
        return out

    so_far.clear = kernel_calls.clear
    return so_far


def test_no_two_sr_quantizations_share_a_random_word(sr_calls):
    model, _, _ = trained(seed=1, n_steps=2)
    nvfp4_layers = sum(layer.recipe.fprop == "nvfp4" for layer in model.lowprec_plan)
    # dgrad and wgrad of each NVFP4 layer, each step (a layer whose input needs no
    # gradient, none here, would skip dgrad)
    assert len(sr_calls()) == 2 * nvfp4_layers * 2
    seeds = {seed for seed, _, _ in sr_calls()}
    assert len(seeds) == nvfp4_layers * 2             # one key per layer call
    for seed in seeds:
        ranges = sorted((start, start + n) for s, start, n in sr_calls() if s == seed)
        assert all(end <= next_start
                   for (_, end), (next_start, _) in zip(ranges, ranges[1:]))


def test_same_seed_same_bits_other_seed_other_bits():
    assert_same_run(trained(seed=1, n_steps=3), trained(seed=1, n_steps=3))
    _, _, losses_a = trained(seed=1, n_steps=3)
    _, _, losses_b = trained(seed=2, n_steps=3)
    assert torch.equal(losses_a[0], losses_b[0])      # the forward has no SR
    assert not torch.equal(losses_a[2], losses_b[2])  # SR words differ after a step


def test_resumed_run_continues_bit_identically():
    straight = trained(seed=3, n_steps=6)

    model, opt, first = trained(seed=3, n_steps=3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "rng": torch.get_rng_state(), "sr": lowprec.sr_state_dict(model)}, buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    torch.manual_seed(999)                             # a fresh process, other state
    resumed = small_gpt()
    resumed_opt = torch.optim.AdamW(resumed.parameters(), lr=1e-2)
    resumed.load_state_dict(state["model"])
    resumed_opt.load_state_dict(state["opt"])
    torch.set_rng_state(state["rng"])          # the run seed (torch.initial_seed) too
    lowprec.load_sr_state_dict(resumed, state["sr"])
    rest = optimizer_steps(resumed, resumed_opt, BATCHES[3:6])
    assert_same_run(straight, (resumed, resumed_opt, first + rest))


def test_activation_checkpointing_replays_the_same_keys(sr_calls):
    plain = trained(seed=4, n_steps=2)
    plain_calls = sr_calls()
    sr_calls.clear()
    checkpointed = trained(seed=4, n_steps=2, checkpoint=True)
    assert_same_run(plain, checkpointed)
    assert sorted(sr_calls()) == sorted(plain_calls)


def test_inference_draws_no_random_numbers():
    model = small_gpt()
    tokens = BATCHES[0][:, :-1]
    state, counts = torch.get_rng_state(), lowprec.sr_state_dict(model)
    with torch.no_grad():
        model(tokens)
    model.requires_grad_(False)
    model(tokens)                                      # grad mode on, nothing to train
    assert torch.equal(torch.get_rng_state(), state)
    assert lowprec.sr_state_dict(model) == counts      # no SR key taken
