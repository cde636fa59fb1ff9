"""The CUDA kernels of csrc/quantize.cu, run on the CPU by cuda_sim/ (one std::thread per
CUDA thread), equal the reference bit for bit.

This checks what the CPU build cannot: the kernels' own indexing, tiling, shared-memory
transposes, warp shuffles, amax atomics and grid-stride loops (the simulated GPU has 2
SMs of 1 block, so every kernel loops over many tiles per block). What it cannot check is
anything of the hardware: the device intrinsics' rounding (__fmul_rn etc. take the host
path here), the memory model, timing. Those are for `pytest -m gpu` on a GPU.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess

import pytest
import torch
from csrc_helpers import UINT64, assert_bits_equal, float_tensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowprec import _C
from lowprec import reference as R

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIM_DIR = os.path.join(os.path.dirname(__file__), "cuda_sim")
SOURCES = [os.path.join(ROOT, "csrc", "quantize.cu"), os.path.join(SIM_DIR, "sim_api.cpp")]
DEPENDS = SOURCES + [os.path.join(ROOT, "csrc", f) for f in ("nvfp4_math.h", "quantize_cuda.h")] + [
    os.path.join(SIM_DIR, f) for f in ("sim.h", "cuda_runtime.h", "cuda_fp16.h")]
TYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def sim():
    """The simulator library, built once per source version into build/cuda_sim/."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        pytest.fail(f"no C++ compiler ({compiler}) to build the CUDA simulator")
    digest = hashlib.sha256(b"".join(open(p, "rb").read() for p in DEPENDS)).hexdigest()[:16]
    out_dir = os.path.join(ROOT, "build", "cuda_sim")
    lib = os.path.join(out_dir, f"libquantize_sim_{digest}.so")
    if not os.path.exists(lib):
        os.makedirs(out_dir, exist_ok=True)
        cmd = [compiler, "-std=c++20", "-O2", "-shared", "-fPIC", "-pthread", "-ffp-contract=off",
               "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", f"-I{SIM_DIR}",
               f"-I{os.path.join(ROOT, 'csrc')}", "-x", "c++", *SOURCES, "-o", lib + ".tmp"]
        subprocess.run(cmd, check=True)
        os.replace(lib + ".tmp", lib)
    handle = ctypes.CDLL(lib)
    p, i64, u64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int
    handle.sim_quantize.argtypes = [p, i32, i64, i64, i32, i32, i32, u64, u64] + [p] * 7
    handle.sim_rowcol.argtypes = [p, i32, i64, i64, i32, i32, i32, i32, u64, u64, u64] + [p] * 8
    return handle


def _ptr(t):
    return None if t is None else t.data_ptr()


def _outputs(rows, cols):
    return (torch.empty(rows, cols // 2, dtype=torch.uint8),
            torch.empty(rows, cols // 16, dtype=torch.uint8), torch.empty((), dtype=torch.float32))


def _triple(outs):
    return outs[0], outs[1].view(torch.float8_e4m3fn), outs[2]


def _amax(value):
    return None if value is None else torch.tensor(value, dtype=torch.float32)


def sim_quantize(lib, x, *, block_rows=1, rht_signs=None, stochastic=False, seed=0, offset=0,
                 amax=None, transposed=False):
    x = x.contiguous()
    cols = x.shape[-1]
    rows = x.numel() // cols if cols else 0
    out = _outputs(rows, cols)
    t = _outputs(cols, rows) if transposed else (None, None, None)
    err = lib.sim_quantize(_ptr(x), TYPES[x.dtype], rows, cols, block_rows,
                           _C.sign_mask(rht_signs), int(stochastic), seed, offset, _ptr(amax),
                           *map(_ptr, out), *map(_ptr, t))
    assert err == 0
    shape = (*x.shape[:-1], cols)
    data, scale, am = _triple(out)
    row = (data.reshape(*shape[:-1], cols // 2), scale.reshape(*shape[:-1], cols // 16), am)
    return row, (_triple(t) if transposed else None)


def sim_rowcol(lib, x, *, rht_signs, rowwise, row_sr, col_sr, seed, row_offset, col_offset,
               row_amax, col_amax):
    x2 = x.contiguous().reshape(-1, x.shape[-1])
    rows, cols = x2.shape
    padded = (rows + 15) // 16 * 16
    row = _outputs(rows, cols) if rowwise else (None, None, None)
    col = _outputs(cols, padded)
    err = lib.sim_rowcol(_ptr(x2), TYPES[x.dtype], rows, cols, _C.sign_mask(rht_signs),
                         int(rowwise), int(row_sr), int(col_sr), seed, row_offset, col_offset,
                         _ptr(row_amax), _ptr(col_amax), *map(_ptr, row), *map(_ptr, col))
    assert err == 0
    return (_triple(row) if rowwise else None), _triple(col)


SIGNS = st.sampled_from([None, R.DEFAULT_SIGN_VECTOR])
AMAXES = st.sampled_from([None, 0.0, 1.0, 3.0e38, float("inf"), float("nan")])


@SETTINGS
@given(x=float_tensors(min_rows=1, max_rows=90, max_k=160), signs=SIGNS, stochastic=st.booleans(),
       seed=UINT64, offset=UINT64, amax=AMAXES)
def test_1x16_kernel_equals_reference(sim, x, signs, stochastic, seed, offset, amax):
    kwargs = dict(rht_signs=signs, stochastic=stochastic, seed=seed, offset=offset,
                  amax=_amax(amax))
    got, _ = sim_quantize(sim, x, **kwargs)
    assert_bits_equal(got, R.quantize_nvfp4(x, **kwargs), "1x16 kernel")


@SETTINGS
@given(x=float_tensors(min_rows=16, row_multiple=16, max_rows=80, max_k=160, lead=False),
       signs=SIGNS, stochastic=st.booleans(), seed=UINT64, offset=UINT64, amax=AMAXES,
       transposed=st.booleans())
def test_16x16_kernel_equals_reference(sim, x, signs, stochastic, seed, offset, amax, transposed):
    if transposed:
        signs = None  # the transposed copy exists for W (no RHT)
    kwargs = dict(rht_signs=signs, stochastic=stochastic, seed=seed, offset=offset,
                  amax=_amax(amax))
    row, col = sim_quantize(sim, x, block_rows=16, transposed=transposed, **kwargs)
    assert_bits_equal(row, R.quantize_nvfp4(x, block="16x16", **kwargs), "16x16 kernel")
    if transposed:
        _, cpu_col = _C.quantize_weight_2d(x, stochastic=stochastic, seed=seed, offset=offset,
                                           amax=_amax(amax))
        assert_bits_equal(col, cpu_col, "16x16 transposed copy")
        assert torch.equal(R.unpack_codes(col[0]), R.unpack_codes(row[0]).T)


def padded_transpose(x):
    x2 = x.reshape(-1, x.shape[-1])
    padded = torch.zeros((x2.shape[0] + 15) // 16 * 16, x2.shape[1], dtype=x.dtype)
    padded[:x2.shape[0]] = x2
    return padded.T


@SETTINGS
@given(x=float_tensors(min_rows=1, max_rows=150, max_k=176), signs=SIGNS, rowwise=st.booleans(),
       row_sr=st.booleans(), col_sr=st.booleans(), seed=UINT64, row_offset=UINT64,
       col_offset=UINT64, row_amax=AMAXES, col_amax=AMAXES)
def test_fused_rowwise_columnwise_kernel_equals_reference(sim, x, signs, rowwise, row_sr, col_sr,
                                                         seed, row_offset, col_offset, row_amax,
                                                         col_amax):
    if x.shape[-1] == 0:
        return  # nothing to launch
    row, col = sim_rowcol(sim, x, rht_signs=signs, rowwise=rowwise, row_sr=row_sr,
                          col_sr=col_sr, seed=seed, row_offset=row_offset,
                          col_offset=col_offset, row_amax=_amax(row_amax),
                          col_amax=_amax(col_amax))
    if rowwise:
        expected = R.quantize_nvfp4(x.reshape(-1, x.shape[-1]), stochastic=row_sr, seed=seed,
                                    offset=row_offset, amax=_amax(row_amax))
        assert_bits_equal(row, expected, "fused kernel, rowwise")
    expected = R.quantize_nvfp4(padded_transpose(x), rht_signs=signs, stochastic=col_sr,
                                seed=seed, offset=col_offset, amax=_amax(col_amax))
    assert_bits_equal(col, expected, "fused kernel, columnwise")
