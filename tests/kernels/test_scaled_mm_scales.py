"""``scaled_mm_scales``: both operands' block scales in cuBLAS's blocked layout and their
global decode scales, one launch, equal to ``reference.swizzle_scales`` and
``reference.global_decode_scale`` bit for bit (padding included)."""

import pytest
import torch

from lowprec import reference as R
from lowprec.kernels import scaled_mm_scales as kernel


def random_scales(rows, cols, seed):
    """E4M3 scale bytes of every pattern, NaN ones included (0x7F, 0xFF)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (rows, cols), generator=g, dtype=torch.uint8).view(
        torch.float8_e4m3fn)


# (M, N, K/16): full tiles, rows and columns that need padding, one row, one column, no
# rows of A (no tokens).
SHAPES = [(128, 256, 4), (33, 48, 3), (130, 16, 10), (1, 1, 1), (256, 129, 8), (16, 200, 5),
          (0, 32, 2)]


@pytest.mark.parametrize("m,n,cols", SHAPES)
def test_the_swizzled_scales_are_the_reference_layout(device, m, n, cols, monkeypatch):
    a, b = random_scales(m, cols, m), random_scales(n, cols, n + 1)
    # Output memory full of garbage: every byte, padding included, must be written.
    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *s, **kw: empty(*s, **kw).fill_(0x5A)
                        if kw.get("dtype") == torch.uint8 else empty(*s, **kw))
    scale_a, scale_b, _ = kernel.scaled_mm_scales(a.to(device), torch.tensor(1.0, device=device),
                                                  b.to(device), torch.tensor(2.0, device=device))
    for got, scale in ((scale_a, a), (scale_b, b)):
        assert got.dtype == torch.float8_e4m3fn and got.dim() == 1
        assert got.numel() == kernel.swizzled_size(*scale.shape)
        assert torch.equal(got.cpu().view(torch.uint8), R.swizzle_scales(scale).view(torch.uint8))


AMAXES = [0.0, 1.0, 3.0, 2688.0, 1e-30, 1e-45, 3.4e38, float("inf"), float("nan"), 7.5e-3,
          123456.0]


@pytest.mark.parametrize("a_amax", AMAXES)
def test_the_decode_scales_are_the_reference_bits(device, same_bits, a_amax):
    scale = random_scales(16, 2, 0).to(device)
    for b_amax in (0.0, 5.0, float("nan"), 1e-38):
        amaxes = torch.tensor(a_amax), torch.tensor(b_amax)
        *_, got = kernel.scaled_mm_scales(scale, amaxes[0].to(device), scale,
                                          amaxes[1].to(device))
        want = torch.stack([R.global_decode_scale(amax) for amax in amaxes])
        same_bits(got, want)
