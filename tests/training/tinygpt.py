"""A tiny GPT and a synthetic language with learnable structure, for CPU training tests.

The language is an order-2 Markov chain over ``vocab`` tokens: each pair of previous
tokens allows 4 next tokens with probabilities 0.4/0.3/0.2/0.1, so a model that has
learnt it reaches the chain's entropy (1.2799 nats per token) while a unigram model
stays near ln(vocab). Learning it needs attention to the two previous positions.

TinyGPT is not the demo's GPT (lowprec.demo.model) on purpose: its untied LM head is an
``nn.Linear`` (so convert's "LM head stays BF16" rule has something to act on), its
linears carry biases (the bias path of the training layer), it can checkpoint every
block, and the training tests' expectations name its layers (``blocks.0.qkv``, ``head``).
"""

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

NEXT_PROBS = (0.4, 0.3, 0.2, 0.1)
CHAIN_ENTROPY = -sum(p * math.log(p) for p in NEXT_PROBS)


class Block(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)
        heads = [z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2)
                 for z in (q, k, v)]
        attn = F.scaled_dot_product_attention(*heads, is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, vocab=64, d_model=64, n_blocks=4, n_heads=4, seq_len=32,
                 checkpoint=False):
        super().__init__()
        self.checkpoint = checkpoint        # activation checkpointing of every block
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_blocks))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens):
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            if self.checkpoint:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(self.ln(x))


def loss_fn(model, tokens):
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def markov_batches(n_batches, batch, seq_len, vocab=64, seed=1234):
    """``n_batches`` int64 tensors ``[batch, seq_len + 1]`` from the order-2 chain."""
    gen = torch.Generator().manual_seed(seed)
    # next-token candidates for every (a, b) context, in order of probability
    table = torch.stack([torch.randperm(vocab, generator=gen)[:4]
                         for _ in range(vocab * vocab)])
    probs = torch.tensor(NEXT_PROBS)
    total = n_batches * batch
    seqs = torch.empty(total, seq_len + 1, dtype=torch.int64)
    seqs[:, :2] = torch.randint(vocab, (total, 2), generator=gen)
    for t in range(2, seq_len + 1):
        choice = torch.multinomial(probs.expand(total, 4), 1, generator=gen).squeeze(1)
        context = seqs[:, t - 2] * vocab + seqs[:, t - 1]
        seqs[:, t] = table[context, choice]
    return list(seqs.split(batch))


def optimizer_steps(model, opt, batches):
    """One step of ``opt`` per batch; returns the losses as detached tensors."""
    losses = []
    for tokens in batches:
        loss = loss_fn(model, tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses


def train(model, batches, lr=3e-3, steps=None):
    """AdamW over ``batches`` (one step each); returns the list of losses."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    return [loss.item() for loss in optimizer_steps(model, opt, batches[:steps])]
