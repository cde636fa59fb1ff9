"""Llama-style blocks for the training-step benchmark: where FP8 can pay on Hopper.

d_model 4096 and a SwiGLU FFN of 14336 (Llama-3 8B's shapes), grouped-query attention
(32 query heads, 8 key/value heads), RMSNorm, no biases. The model is the blocks alone
on embedded inputs (no embedding or LM head, whose vocabulary GEMM would dilute what the
linear layers cost); the loss is the mean square of the output, enough for a backward
through every GEMM. Every matrix multiply of a block is an ``nn.Linear`` in the
``blocks`` ``nn.ModuleList``, so ``lowprec.convert`` and torchao find them.
"""

import dataclasses

import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    d_model: int = 4096
    ffn: int = 14336
    n_head: int = 32
    n_kv_head: int = 8
    n_layer: int = 4


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.n_kv = cfg.n_head, cfg.n_kv_head
        self.head = cfg.d_model // cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, (cfg.n_head + 2 * cfg.n_kv_head) * self.head,
                             bias=False)
        self.o = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split([self.n_head * self.head, self.n_kv * self.head,
                                     self.n_kv * self.head], dim=-1)
        q = q.view(b, t, self.n_head, self.head).transpose(1, 2)
        k = k.view(b, t, self.n_kv, self.head).transpose(1, 2)
        v = v.view(b, t, self.n_kv, self.head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.ffn, bias=False)
        self.down = nn.Linear(cfg.ffn, cfg.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model)
        self.mlp = SwiGLU(cfg)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LlamaBlocks(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x.float().square().mean()
