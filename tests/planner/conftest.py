"""Shared fixtures of the planner tests: tiny models with a known loss, and batches.

Sizes are small on purpose: the reference quantizers run on the CPU and every planner
statistic quantizes each layer's operands several times.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F


class TinyMLP(nn.Module):
    """Three NVFP4-shaped linears and a 10-way head (N=10: NVFP4 cannot take it)."""

    def __init__(self, width=32):
        super().__init__()
        self.fc1 = nn.Linear(32, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x, y=None):
        h = F.gelu(self.fc1(x))
        h = F.gelu(self.fc2(h))
        logits = self.head(F.gelu(self.fc3(h)))
        return logits if y is None else F.cross_entropy(logits, y)


@pytest.fixture
def tiny_mlp():
    torch.manual_seed(0)
    return TinyMLP()


@pytest.fixture
def mlp_batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(48, 32, generator=gen), torch.randint(0, 10, (48,), generator=gen))
            for _ in range(2)]


@pytest.fixture
def mlp_loss():
    return lambda model, batch: model(*batch)
