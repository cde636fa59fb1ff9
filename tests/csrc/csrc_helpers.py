"""Shared by tests/csrc: bit-exact comparison, and hypothesis strategies for inputs.

A drawn case is a shape, a dtype, a value family and a seed; the tensor is built from the
seed with torch's generator (fast, and hypothesis still shrinks over the family, the
shape and the seed), then special values are written at drawn positions. Families cover
what changes bits: heavy tails, exact zeros (both signs), values that underflow E4M3
scales, huge values near the top of the dtype, exact E2M1 grid points and ties.
"""

import torch
from hypothesis import strategies as st

from lowprec import reference as R

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FAMILIES = ("normal", "heavy", "zeros", "tiny", "huge", "grid", "underflow_blocks", "mixed")
SPECIALS = (float("nan"), float("-nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e-45, -3e38,
            6.0, 2.5, 65504.0, 1e-8)
UINT64 = st.one_of(st.integers(0, 2 ** 64 - 1), st.sampled_from([0, 1, 2 ** 32 - 1, 2 ** 32,
                                                                 2 ** 64 - 1, 2 ** 64 - 5]))


def _finfo_max(dtype):
    return torch.finfo(dtype).max


def make_values(shape, dtype, family, seed):
    """A float32 tensor of `shape` from `family`, cast to `dtype` (may overflow to Inf)."""
    g = torch.Generator().manual_seed(seed)
    n = 1
    for s in shape:
        n *= s
    normal = torch.randn(n, generator=g)
    if family == "normal":
        v = normal
    elif family == "heavy":
        v = normal * torch.exp(torch.randn(n, generator=g) * 4)
    elif family == "zeros":
        v = torch.where(torch.rand(n, generator=g) < 0.5, 0.0, -0.0) * torch.ones(n)
        v = torch.where(torch.rand(n, generator=g) < 0.05, normal, v)
    elif family == "tiny":
        v = normal * (1e-41 if dtype == torch.float32 else 1e-7 if dtype == torch.float16 else 1e-38)
    elif family == "huge":
        v = normal.clamp(-2, 2) * (_finfo_max(dtype) / 2)
    elif family == "grid":
        grid = torch.tensor(R.E2M1_GRID + (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0))
        idx = torch.randint(0, len(grid), (n,), generator=g)
        sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        power = 2.0 ** torch.randint(-3, 4, (n,), generator=g).float()
        v = grid[idx] * sign * power
    elif family == "underflow_blocks":
        scale = torch.where(torch.rand(max(n // 16, 1), generator=g) < 0.5, 1e-12, 1e3)
        v = normal * scale.repeat_interleave(16)[:n] if n >= 16 else normal
    else:  # mixed: every 16-element block from its own magnitude
        mags = 10.0 ** torch.randint(-30, 30, (max(n // 16, 1),), generator=g).float()
        v = normal * mags.repeat_interleave(16)[:n] if n >= 16 else normal
    return v.reshape(shape).to(dtype)


@st.composite
def float_tensors(draw, *, min_rows=0, max_rows=40, row_multiple=1, max_k=96, lead=True,
                  specials=True):
    """[*lead, rows, K] tensors with K % 16 == 0 and rows % row_multiple == 0."""
    k = 16 * draw(st.integers(0 if not row_multiple > 1 else 1, max_k // 16))
    rows = row_multiple * draw(st.integers(min_rows // row_multiple, max_rows // row_multiple))
    shape = [rows, k]
    if lead and draw(st.booleans()):
        shape = [draw(st.integers(1, 3))] + shape
    dtype = draw(st.sampled_from(DTYPES))
    family = draw(st.sampled_from(FAMILIES))
    x = make_values(shape, dtype, family, draw(st.integers(0, 2 ** 31)))
    if specials and x.numel() and draw(st.booleans()):
        flat = x.view(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from(SPECIALS))
    return x


def _comparable(t):
    """An integer view of t whose equality is bit equality (NaN payloads included)."""
    if t.dtype in (torch.float8_e4m3fn, torch.uint8):
        return t.view(torch.uint8)
    if t.dtype == torch.float32:
        return t.view(torch.int32)
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(torch.int16)
    return t


def assert_bits_equal(actual, expected, what=""):
    """Every tensor of `actual` equals the one of `expected` bit for bit (same shapes)."""
    if isinstance(expected, torch.Tensor):
        actual, expected = (actual,), (expected,)
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == e.dtype, f"{what} output {i}: dtype {a.dtype} != {e.dtype}"
        assert a.shape == e.shape, f"{what} output {i}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        ca, ce = _comparable(a.cpu()), _comparable(e.cpu())
        if not torch.equal(ca, ce):
            bad = (ca != ce).nonzero()
            first = tuple(bad[0].tolist()) if bad.numel() else ()
            raise AssertionError(f"{what} output {i}: {bad.shape[0]} elements differ; first at "
                                 f"{first}: {ca[first].item()} != {ce[first].item()}")
