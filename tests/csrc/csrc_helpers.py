"""Shared by tests/csrc: bit-exact comparison, and hypothesis strategies for inputs.

A drawn case is a shape, a dtype, a value family and a seed; the tensor is built from the
seed with torch's generator (fast, and hypothesis still shrinks over the family, the
shape and the seed), then special values are written at drawn positions. Families cover
what changes bits: heavy tails, exact zeros (both signs), values that underflow E4M3
scales, huge values near the top of the dtype, exact E2M1 grid points and ties.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess

import pytest
import torch
from hypothesis import strategies as st

from lowprec import checks
from lowprec import reference as R
from lowprec.backends import extension

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CSRC = os.path.join(ROOT, "csrc")
SIM_DIR = os.path.join(os.path.dirname(__file__), "cuda_sim")
SIM_SOURCES = [os.path.join(CSRC, f) for f in ("quantize.cu", "nvfp4_gemm_values.cu")] + [
    os.path.join(SIM_DIR, "sim_api.cpp")]
SIM_DEPENDS = SIM_SOURCES + [os.path.join(CSRC, f) for f in (
    "nvfp4_math.h", "quantize_cuda.h", "nvfp4_gemm_values_cuda.h", "cuda_launch.h")] + [
    os.path.join(SIM_DIR, f) for f in ("sim.h", "cuda_runtime.h", "cuda_fp16.h")]


def build_shared_library(name, sources, depends, extra_flags=()):
    """``sources`` compiled as C++20 into build/cuda_sim/lib<name>_<digest>.so (once per
    version of ``depends``), loaded with ctypes."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        pytest.fail(f"no C++ compiler ({compiler}) to build {name}")
    digest = hashlib.sha256(b"".join(open(p, "rb").read() for p in depends)).hexdigest()[:16]
    out_dir = os.path.join(ROOT, "build", "cuda_sim")
    lib = os.path.join(out_dir, f"lib{name}_{digest}.so")
    if not os.path.exists(lib):
        os.makedirs(out_dir, exist_ok=True)
        cmd = [compiler, "-std=c++20", "-O2", "-shared", "-fPIC", "-ffp-contract=off", "-Wall",
               "-Wextra", "-Werror", "-Wno-unknown-pragmas", *extra_flags, f"-I{CSRC}",
               "-x", "c++", *sources, "-o", lib + ".tmp"]
        subprocess.run(cmd, check=True)
        os.replace(lib + ".tmp", lib)
    return ctypes.CDLL(lib)


def build_sim():
    """The CUDA simulator library (cuda_sim/: the kernels of csrc/*.cu on CPU threads),
    with the argument types of its entry points."""
    handle = build_shared_library("quantize_sim", SIM_SOURCES, SIM_DEPENDS,
                                  ("-pthread", f"-I{SIM_DIR}"))
    p, i64, u64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int
    handle.sim_quantize.argtypes = ([p, i32, i64, i64, i32, i32, i32, u64, u64] + [p] * 7 +
                                    [i32, p, i32, p])
    handle.sim_rowcol.argtypes = ([p, i32, i64, i64, i32, i32, i32, i32, u64, u64, u64] + [p] * 8 +
                                  [i32, i32, i32, p])
    handle.sim_set_sms.argtypes = [i32]
    handle.sim_gemm_scalars.argtypes = [p, p, p]
    return handle

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


# -- calling the CUDA simulator's entry points (tests/csrc/cuda_sim) --------------------

TYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def _ptr(t):
    return None if t is None else t.data_ptr()


# What a values-mode output holds before the kernel runs: an element it fails to write
# shows up as these bits (a NaN, which no value of the kernels has).
UNWRITTEN = 0x7F5A


def _outputs(rows, cols, values=False):
    """A copy's buffers: codes and scales, or (values mode) bf16 values prefilled with
    UNWRITTEN and an empty scale (the kernels do not touch it)."""
    if values:
        return (torch.full((rows, cols), UNWRITTEN, dtype=torch.int16).view(torch.bfloat16),
                torch.empty(0, dtype=torch.uint8), torch.empty((), dtype=torch.float32))
    return (torch.empty(rows, cols // 2, dtype=torch.uint8),
            torch.empty(rows, cols // 16, dtype=torch.uint8), torch.empty((), dtype=torch.float32))


def _triple(outs):
    return outs[0], outs[1].view(torch.float8_e4m3fn), outs[2]


def amax_tensor(value):
    return None if value is None else torch.tensor(value, dtype=torch.float32)


def sim_quantize(lib, x, *, block_rows=1, rht_signs=None, stochastic=False, seed=0, offset=0,
                 amax=None, transposed=False, variant=0, partials=None, values=False,
                 seed_in_memory=False):
    """partials: a ctypes.c_int that receives how many amax partials were reduced.
    values: the copy in values mode, ``(values bf16 [..., K], empty e4m3 [0], amax)``.
    seed_in_memory: the kernel gets the key in memory (``key_in_memory``)."""
    x = x.contiguous()
    cols = x.shape[-1]
    rows = x.numel() // cols if cols else 0
    out = _outputs(rows, cols, values)
    t = _outputs(cols, rows) if transposed else (None, None, None)
    seed, key = key_in_memory(seed) if seed_in_memory else (seed, None)
    err = lib.sim_quantize(_ptr(x), TYPES[x.dtype], rows, cols, block_rows,
                           extension.sign_mask(rht_signs), int(stochastic), seed, offset,
                           _ptr(amax), *map(_ptr, out), *map(_ptr, t), variant,
                           None if partials is None else ctypes.byref(partials), int(values),
                           _ptr(key))
    assert err == 0
    lead = x.shape[:-1]
    data, scale, am = _triple(out)
    if values:
        row = (data.reshape(*lead, cols), scale, am)
    else:
        row = (data.reshape(*lead, cols // 2), scale.reshape(*lead, cols // 16), am)
    return row, (_triple(t) if transposed else None)


def key_in_memory(seed):
    """(the seed argument, the key tensor) for a kernel reading its key from memory: the
    by-value seed then given is a different key, so a kernel that read it would fail."""
    return seed ^ 1, torch.tensor([checks.as_int64(seed)], dtype=torch.int64)


def sim_rowcol(lib, x, *, rht_signs, rowwise, row_sr, col_sr, seed, row_offset, col_offset,
               row_amax, col_amax, variant=0, row_values=False, col_values=False,
               seed_in_memory=False):
    x2 = x.contiguous().reshape(-1, x.shape[-1])
    rows, cols = x2.shape
    padded = (rows + 15) // 16 * 16
    row = _outputs(rows, cols, row_values) if rowwise else (None, None, None)
    col = _outputs(cols, padded, col_values)
    seed, key = key_in_memory(seed) if seed_in_memory else (seed, None)
    err = lib.sim_rowcol(_ptr(x2), TYPES[x.dtype], rows, cols, extension.sign_mask(rht_signs),
                         int(rowwise), int(row_sr), int(col_sr), seed, row_offset, col_offset,
                         _ptr(row_amax), _ptr(col_amax), *map(_ptr, row), *map(_ptr, col),
                         variant, int(row_values), int(col_values), _ptr(key))
    assert err == 0
    return (_triple(row) if rowwise else None), _triple(col)


def padded_transpose(x):
    x2 = x.reshape(-1, x.shape[-1])
    padded = torch.zeros((x2.shape[0] + 15) // 16 * 16, x2.shape[1], dtype=x.dtype)
    padded[:x2.shape[0]] = x2
    return padded.T
