"""A Hugging Face Llama (built from a small config, nothing downloaded) converts with
lowprec.convert and trains.

Skipped when transformers is not installed; CI installs it.
"""

import math

import pytest
import torch

import lowprec

from . import hf_models

transformers = pytest.importorskip("transformers")

N_LAYERS = 4


def small_llama():
    # Every projection's in/out features are multiples of 16 (NVFP4 needs it):
    # q/o 64x64, k/v 32x64 (2 KV heads of 16), gate/up 128x64, down 64x128.
    config = transformers.LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128,
        num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def batch(seed, size=4, seq_len=32):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (size, seq_len), generator=gen)
    return {"input_ids": ids, "labels": ids}


def test_default_plan_keeps_tail_block_and_head_high_precision():
    model = small_llama()
    keys_before = set(model.state_dict())
    model = lowprec.convert(model)
    plan = model.lowprec_plan
    assert set(model.state_dict()) == keys_before        # checkpoints stay compatible
    # round(0.15 * 4) = 1 block of 4 stays BF16, and so does the LM head.
    for layer in plan:
        last_block = layer.name.startswith(f"model.layers.{N_LAYERS - 1}.")
        in_blocks = layer.name.startswith("model.layers.")
        expected = "bf16" if last_block or not in_blocks else "nvfp4"
        assert layer.precisions() == (expected,) * 3, (layer.name, layer.precisions())
    assert plan["lm_head"].precisions() == ("bf16",) * 3
    assert isinstance(model.model.layers[0].self_attn.q_proj, lowprec.Linear)
    # 7 projections per block, all converted, plus the head.
    assert len(plan) == 7 * N_LAYERS + 1


def test_converted_llama_trains_with_finite_falling_loss():
    reference = small_llama()
    model = lowprec.convert(small_llama())       # same seed: the same initial weights
    data = batch(seed=1)
    with torch.no_grad():
        high, low = reference(**data).loss.item(), model(**data).loss.item()
    # The NVFP4 forward really runs (the loss moves) and stays close to high precision.
    assert low != high and abs(low - high) < 0.05, (low, high)

    weight = model.model.layers[0].mlp.down_proj.weight
    before = weight.detach().clone()
    losses = hf_models.train_steps(model, data, steps=8, seed=2)
    assert all(math.isfinite(x) for x in losses), losses
    # One repeated batch: the loss must fall well below its start (ln 256 ~ 5.55).
    assert losses[-1] < losses[0] - 0.5, losses
    # The quantized backward reached an NVFP4 layer's weight.
    assert not torch.equal(weight.detach(), before)
