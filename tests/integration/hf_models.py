"""Tiny Hugging Face models built from configs (nothing downloaded), one per family.

Every projection's K and N is a multiple of 16 (NVFP4 needs it) except where a model
fixes a dimension itself (Qwen2-MoE's shared-expert gate has N = 1).
"""

import torch

VOCAB = 128


def _experts_eager(model):
    # transformers' default experts kernel (grouped_mm) is a custom op that the FLOP
    # counter does not see; the eager loop computes the same with F.linear.
    model.config._experts_implementation = "eager"
    return model


def gpt2(t):
    return t.GPT2LMHeadModel(t.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32,
                                          n_layer=4, n_head=2))


def t5(t):
    return t.T5ForConditionalGeneration(t.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=3, num_decoder_layers=3,
        num_heads=2, decoder_start_token_id=0))


def bart(t):
    return t.BartForConditionalGeneration(t.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64))


def mixtral(t):
    return _experts_eager(t.MixtralForCausalLM(t.MixtralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=64)))


def qwen2_moe(t):
    return _experts_eager(t.Qwen2MoeForCausalLM(t.Qwen2MoeConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
        shared_expert_intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=64)))


def qwen3_moe(t):
    return _experts_eager(t.Qwen3MoeForCausalLM(t.Qwen3MoeConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        num_experts=4, num_experts_per_tok=2, max_position_embeddings=64)))


def llama(t):
    return t.LlamaForCausalLM(t.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64))


FACTORIES = {f.__name__: f for f in (gpt2, t5, bart, mixtral, qwen2_moe, qwen3_moe, llama)}
ENCODER_DECODER = ("t5", "bart")


def build(name, transformers, seed=0):
    torch.manual_seed(seed)
    return FACTORIES[name](transformers)


def batch(name, seed, size=2, seq_len=16):
    """Inputs with labels; encoder and decoder see the same number of tokens, so every
    linear layer of the model sees the same tokens (per-token MACs are FLOP shares)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (size, seq_len), generator=gen)
    out = {"input_ids": ids, "labels": ids}
    if name in ENCODER_DECODER:
        out["decoder_input_ids"] = torch.roll(ids, 1, dims=1)
    return out


def train_steps(model, data, steps, lr=1e-2, seed=3):
    """AdamW steps on one repeated batch (HF style: ``model(**data).loss``), the SR keys
    fixed by ``seed``; returns the losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    torch.manual_seed(seed)
    losses = []
    for _ in range(steps):
        loss = model(**data).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return losses
