"""Differential fuzz: every backend that runs here against the reference, bit for bit.

A seeded generator draws cases over shapes (1-3 D, odd row counts, K up to 512), input
dtypes, strides (contiguous, transposed, sliced, expanded), 14 value distributions and
every option of ``quantize_nvfp4`` (1x16 / 16x16 blocks, RHT with random signs, SR with
offsets that wrap 2^64, a given amax). Each case runs through ``lowprec.quantize_nvfp4``,
``dequantize_nvfp4`` (fp32 / bf16 / fp16) and ``quantize_fp8`` on each backend and
compares codes, scales, amax, dequantized values and FP8 data and scales with the
reference's raw bits (NaN payloads included: the canonical NaN is part of the spec).

The default run draws a fast slice (FAST_CASES per backend); ``pytest -m slow`` draws
SLOW_CASES for the C++ backend and SLOW_TRITON_CASES (small shapes) for Triton in its
interpreter, and prints the per-backend counts. Case ``i`` is generated from seed ``i``
alone, so a failure message names the seed that reproduces it (``make_case(seed)``).

Mutants these tests kill (each re-run once): Triton ignoring the RHT signs with
16x16 blocks (now refused in ops.py for every backend), Triton's butterfly without the
zero-sign fix, the non-canonical NaNs of dequantize / FP8 (see test_canonical_nan.py),
csrc encode_rows using the chunk-local row for SR counters.
"""

import warnings

import pytest
import torch

import lowprec
from lowprec import reference as R

FAST_CASES = {"cpu": 400, "triton": 100}
SLOW_CASES = 10_000
SLOW_TRITON_CASES = 2_000
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32}
# E2M1 rounding midpoints: exact ties of RNE (NUMERICS 3).
MIDPOINTS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])


def _dist_normal(g, shape):
    return torch.randn(shape, generator=g)


def _dist_wide(g, shape):
    return torch.randn(shape, generator=g) * torch.exp2(torch.randint(-40, 40, shape, generator=g)
                                                        .float())


def _dist_midpoints(g, shape):
    """Exact E2M1 midpoints times a power of two, with a 6 * 2^e per block so that block
    scales are exact and the midpoints stay ties after scaling."""
    e = float(torch.randint(-10, 10, (), generator=g))
    idx = torch.randint(0, len(MIDPOINTS), shape, generator=g)
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
    x = MIDPOINTS[idx] * sign * 2.0 ** e
    x.view(-1, 16)[:, 0] = 6.0 * 2.0 ** e
    return x


def _dist_denormal(g, shape):
    return torch.randn(shape, generator=g) * 1e-40          # fp32 subnormals


def _dist_huge(g, shape):
    return torch.randn(shape, generator=g) * 1e30


def _dist_tiny(g, shape):
    return torch.randn(shape, generator=g) * 1e-30


def _dist_signed_zeros(g, shape):
    return torch.where(torch.rand(shape, generator=g) < 0.5, -0.0, 0.0)


def _with(g, x, value, fraction):
    mask = torch.rand(x.shape, generator=g) < fraction
    return torch.where(mask, torch.tensor(value), x)


def _dist_nan(g, shape):
    x = _with(g, torch.randn(shape, generator=g), float("nan"), 0.02)
    return _with(g, x, -float("nan"), 0.01)


def _dist_inf(g, shape):
    x = _with(g, torch.randn(shape, generator=g), float("inf"), 0.02)
    return _with(g, x, -float("inf"), 0.02)


def _dist_nan_inf(g, shape):
    x = _with(g, _dist_nan(g, shape), float("inf"), 0.02)
    return _with(g, x, -float("inf"), 0.01)


def _dist_constant_blocks(g, shape):
    x = torch.randn(shape, generator=g).view(-1, 16)
    return x[:, :1].expand(-1, 16).reshape(shape).clone()


def _dist_grid(g, shape):
    """Values already on the E2M1 grid (times a power of two): nothing may move."""
    grid = torch.tensor(R.E2M1_GRID + tuple(-v for v in R.E2M1_GRID))
    return grid[torch.randint(0, 16, shape, generator=g)] * 2.0 ** float(
        torch.randint(-5, 5, (), generator=g))


def _dist_outlier(g, shape):
    x = torch.randn(shape, generator=g)
    x.view(-1)[int(torch.randint(0, x.numel(), (), generator=g))] = 1e4
    return x


def _dist_near_max(g, shape):
    return torch.randn(shape, generator=g) * 3e38


DISTRIBUTIONS = {f.__name__[6:]: f for f in (
    _dist_normal, _dist_wide, _dist_midpoints, _dist_denormal, _dist_huge, _dist_tiny,
    _dist_signed_zeros, _dist_nan, _dist_inf, _dist_nan_inf, _dist_constant_blocks,
    _dist_grid, _dist_outlier, _dist_near_max)}
assert len(DISTRIBUTIONS) == 14


def _choice(g, options):
    return options[int(torch.randint(0, len(options), (), generator=g))]


def _u64(g, near_wrap):
    """A uint64 seed/offset; near_wrap puts it within 2^10 of 2^64 so counters wrap."""
    hi = int(torch.randint(0, 2**32, (), generator=g))
    lo = int(torch.randint(0, 2**32, (), generator=g))
    if near_wrap:
        return 2**64 - 1 - (lo % 1024)
    return (hi << 32) | lo


def _strided(g, base_shape, dtype, make_values):
    """A tensor of ``base_shape`` whose strides are one of four kinds, and the kind."""
    kind = _choice(g, ["contiguous", "transposed", "sliced", "expanded"])
    *lead, rows, k = base_shape if len(base_shape) > 1 else (1, base_shape[0])
    if len(base_shape) == 1:
        kind = _choice(g, ["contiguous", "sliced"])
    if kind == "transposed":
        x = make_values((*lead, k, rows)).to(dtype).transpose(-1, -2)
    elif kind == "sliced":
        wide = make_values((*base_shape[:-1], k + 32)).to(dtype)
        x = wide[..., 16:16 + k]
    elif kind == "expanded":
        x = make_values((*lead, 1, k)).to(dtype).expand(*lead, rows, k)
    else:
        x = make_values(tuple(base_shape)).to(dtype)
    assert tuple(x.shape) == tuple(base_shape), (x.shape, base_shape)
    return x, kind


def make_case(seed, max_k=512, max_rows=40):
    """The case of ``seed``: (x, quantize kwargs, dequantize dtype, description)."""
    g = torch.Generator().manual_seed(seed)
    dims = _choice(g, [1, 2, 2, 3])
    block = "16x16" if dims > 1 and float(torch.rand((), generator=g)) < 0.2 else "1x16"
    k = 16 * int(torch.randint(1, max_k // 16 + 1, (), generator=g))
    if block == "16x16":
        rows = 16 * int(torch.randint(1, 3, (), generator=g))
    else:
        rows = int(torch.randint(1, max_rows + 1, (), generator=g)) | 1     # odd
    shape = {1: (k,), 2: (rows, k), 3: (int(torch.randint(1, 4, (), generator=g)), rows, k)}[dims]
    dtype = _choice(g, DTYPES)
    dist_name = _choice(g, sorted(DISTRIBUTIONS))

    def make_values(s):
        return DISTRIBUTIONS[dist_name](g, torch.Size(s))

    x, stride_kind = _strided(g, shape, dtype, make_values)
    rht = block == "1x16" and float(torch.rand((), generator=g)) < 0.4
    kwargs = dict(block=block, rht=rht)
    if rht:
        kwargs["sign_vector"] = tuple((torch.randint(0, 2, (16,), generator=g) * 2 - 1).tolist())
    if float(torch.rand((), generator=g)) < 0.4:
        near_wrap = float(torch.rand((), generator=g)) < 0.5
        kwargs.update(stochastic=True, seed=_u64(g, False), offset=_u64(g, near_wrap))
    if float(torch.rand((), generator=g)) < 0.25:
        kwargs["amax"] = _choice(g, [0.0, 1e-30, 1.0, 448.0, 3e38, float("inf"), float("nan"),
                                     float(torch.rand((), generator=g)) * 10])
    dq_dtype = _choice(g, DTYPES)
    desc = (f"seed={seed} shape={tuple(shape)} {dtype} {stride_kind} {dist_name} "
            f"{ {n: v for n, v in kwargs.items() if n != 'sign_vector'} } rht_signs="
            f"{kwargs.get('sign_vector')} dequantize->{dq_dtype}")
    return x, kwargs, dq_dtype, desc


def _bits(t):
    return t.detach().cpu().contiguous().view(INT_VIEW[t.element_size()])


def _differences(got, want):
    """Names of the fields whose raw bits differ."""
    names = ("codes", "scales", "amax", "dequantized", "fp8 data", "fp8 scales")
    return [name for name, a, b in zip(names, got, want)
            if a.shape != b.shape or not torch.equal(_bits(a), _bits(b))]


def run_backend(backend, x, kwargs, dq_dtype, device):
    q = lowprec.quantize_nvfp4(x.to(device), backend=backend, **kwargs)
    dq = lowprec.dequantize_nvfp4(q, dq_dtype, backend=backend)
    f = lowprec.quantize_fp8(x.to(device), backend=backend)
    return q.data, q.scale, q.amax, dq, f.data, f.scale


def fuzz(backend, seeds, **limits):
    """(cases run, [description + differing fields of each mismatching case])."""
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    mismatches = []
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the interpreter's numpy NaN casts
        for seed in seeds:
            x, kwargs, dq_dtype, desc = make_case(seed, **limits)
            want = run_backend("reference", x, kwargs, dq_dtype, "cpu")
            got = run_backend(backend, x, kwargs, dq_dtype, device)
            diff = _differences(got, want)
            if diff:
                mismatches.append(f"{desc}: {', '.join(diff)} differ")
            count += 1
    return count, mismatches


def backends_here():
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return [b for b in ("cpu", "triton") if lowprec.available(b, device_type=device_type)
            or lowprec.available(b, device_type="cpu")]


def test_generator_covers_every_option():
    """The fast slice must reach every distribution, stride kind, dtype and option."""
    descs = [make_case(seed)[3] for seed in range(FAST_CASES["cpu"])]
    text = "\n".join(descs)
    for needle in [*DISTRIBUTIONS, "contiguous", "transposed", "sliced", "expanded",
                   "16x16", "'rht': True", "'stochastic': True", "'amax'", "float16",
                   "bfloat16", "float32"]:
        assert needle in text, needle
    assert any(f"offset': {2**64 - 1 - i}" in text for i in range(1024))   # wraps 2^64


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_fast_slice(backend):
    if backend not in backends_here():
        pytest.skip(f"backend {backend} does not run here")
    count, mismatches = fuzz(backend, range(FAST_CASES[backend]))
    assert not mismatches, f"{len(mismatches)} of {count} cases differ:\n" + "\n".join(
        mismatches[:10])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_slow_fuzz(backend):
    if backend not in backends_here():
        pytest.skip(f"backend {backend} does not run here")
    n = SLOW_CASES if backend == "cpu" else SLOW_TRITON_CASES
    limits = {} if backend == "cpu" else dict(max_k=64, max_rows=17)
    # Seeds past the fast slice's, so the slow run adds cases rather than repeating them.
    count, mismatches = fuzz(backend, range(1_000_000, 1_000_000 + n), **limits)
    print(f"\nfuzz {backend}: {count} cases, {len(mismatches)} mismatches")
    assert not mismatches, f"{len(mismatches)} of {count} cases differ:\n" + "\n".join(
        mismatches[:10])

