"""A small byte-level GPT for the demo, built only from stock PyTorch modules.

Every matrix multiply of the blocks is an ``nn.Linear`` so that ``lowprec.convert`` can
swap it; the blocks sit in an ``nn.ModuleList`` named ``blocks`` so that convert's default
rule (the last ~15% of repeated blocks stay in BF16) finds them. The output head is tied
to the token embedding and applied with ``F.linear`` on the embedding's weight: it is not
an ``nn.Linear``, so it stays high precision, as NUMERICS 7 keeps the LM head.
"""

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from lowprec.demo.corpus import VOCAB_SIZE


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Model shape. NVFP4 needs every linear's in and out features % 16 == 0, so
    ``d_model`` must be a multiple of 16 (the MLP is 4x wide, attention 3x for QKV).
    ``vocab`` is the demo corpus's bytes unless a benchmark wants a real LM's size."""

    d_model: int = 64
    n_layer: int = 4
    n_head: int = 4
    seq_len: int = 64
    vocab: int = VOCAB_SIZE

    def __post_init__(self):
        if self.d_model % 16:
            raise ValueError(f"d_model must be a multiple of 16 for NVFP4 layers; "
                             f"got {self.d_model}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by "
                             f"n_head={self.n_head}")
        if self.n_layer < 1 or self.seq_len < 1 or self.vocab < 1:
            raise ValueError(f"n_layer, seq_len and vocab must be >= 1; got n_layer="
                             f"{self.n_layer}, seq_len={self.seq_len}, vocab={self.vocab}")


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, d // self.n_head).unbind(2)
        # The attention BMMs are not nn.Linear: they stay high precision (NUMERICS 7).
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=False)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self._init_weights()

    def _init_weights(self):
        # GPT-2's scheme: N(0, 0.02), and the projections that write into the residual
        # stream shrunk by 1/sqrt(2 n_layer) so the stream's variance does not grow with
        # depth.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.cfg.n_layer))

    def forward(self, idx, targets=None):
        """Logits ``[B, T, vocab]``, or the mean cross-entropy when ``targets`` is given."""
        t = idx.shape[1]
        if t > self.cfg.seq_len:
            raise ValueError(f"sequence of {t} tokens exceeds seq_len={self.cfg.seq_len}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.tok_emb.weight)   # tied head, high precision
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
