"""The CUDA kernel variants (issue 21), as far as a machine without a GPU can check them.

* ``extension.CUDA_VARIANTS`` (read by the GPU sweep) has the agreed shape, and its indices are
  exactly those the op schemas accept: through the fake kernels under FakeTensorMode (what
  ``torch.compile`` traces) and through the CPU kernels (which check the same counts as
  the CUDA ops, csrc/ops.h); an index past the end is a ValueError on both.
* The fast E2M1 encoders of csrc/nvfp4_math.h, which the ``fastenc`` variants use, equal
  the originals on a strided sweep of all FP32 magnitudes plus dense windows around every
  rounding threshold (exhaustively, all 2^31 magnitudes, under ``-m slow``).
* Every variant runs in the CPU simulator of the CUDA kernels on fixed hard cases and
  gives the reference's bits (test_cuda_sim.py draws more cases with hypothesis).
* The sm_90a SASS of every kernel, its values-mode instances included, uses no local
  memory (spills or stack), when nvcc is installed.

What stays unchecked here: the variants on real hardware (bits under the device
intrinsics, and their speed), for ``pytest -m gpu`` and lowprec/bench/sweep_variants.py.
"""

import ctypes
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import torch
from csrc_helpers import (CSRC, assert_bits_equal, build_shared_library, build_sim, make_values,
                          sim_quantize, sim_rowcol)
from torch._subclasses.fake_tensor import FakeTensorMode

from lowprec import _C
from lowprec import reference as R
from lowprec.backends import extension
from lowprec.bench import kernel_sass

CHECK_SOURCE = os.path.join(os.path.dirname(__file__), "fastenc_check.cpp")
OPS = ("quantize_nvfp4", "quantize_row_col", "quantize_weight_2d")
S = R.DEFAULT_SIGN_VECTOR


# ----------------------------------------------------------------------------------
# The registry and the schemas
# ----------------------------------------------------------------------------------

def test_variant_registry_shape():
    assert set(extension.CUDA_VARIANTS) == set(OPS)
    for op, variants in extension.CUDA_VARIANTS.items():
        assert variants["baseline"] == 0, op
        assert sorted(variants.values()) == list(range(len(variants))), op
        assert all(isinstance(n, str) and n.isidentifier() for n in variants), op


def _op_args(op, x, variant):
    """Positional arguments of ``op`` on x [32, 48] (bf16), ``variant`` last."""
    if op == "quantize_nvfp4":
        return (x, 1, 0x1234, True, 5, 7, None, variant)
    if op == "quantize_row_col":
        return (x, 0x0F0F, True, True, False, True, 1, 2, 3, None, None, variant)
    return (x, True, False, 0, 0, None, variant)


@pytest.mark.parametrize("op", OPS)
def test_every_variant_index_passes_the_schema_and_the_fake_kernel(op):
    count = len(extension.CUDA_VARIANTS[op])
    with FakeTensorMode():
        x = torch.empty(32, 48, dtype=torch.bfloat16)
        fn = getattr(torch.ops.lowprec_C, op)
        default = fn(*_op_args(op, x, 0)[:-1])           # the schema's default: variant 0
        for variant in range(count):
            out = fn(*_op_args(op, x, variant))
            assert [t.shape for t in out] == [t.shape for t in default]
            assert [t.dtype for t in out] == [t.dtype for t in default]
        for bad in (count, -1):
            with pytest.raises(ValueError, match="variant"):
                fn(*_op_args(op, x, bad))


@pytest.mark.parametrize("op", OPS)
def test_cpu_ops_accept_exactly_the_registered_variants(op):
    """The CPU kernels check the index against csrc/ops.h's counts (the CUDA ops'), and
    have one implementation: the same bits for every index."""
    x = make_values((32, 48), torch.bfloat16, "heavy", 0)
    fn = getattr(torch.ops.lowprec_C, op)
    expected = fn(*_op_args(op, x, 0))
    for variant in range(1, len(extension.CUDA_VARIANTS[op])):
        assert_bits_equal(fn(*_op_args(op, x, variant)), expected, f"{op} variant {variant}")
    with pytest.raises(ValueError, match="variant"):
        fn(*_op_args(op, x, len(extension.CUDA_VARIANTS[op])))


def test_python_wrappers_pass_the_variant():
    x = make_values((32, 48), torch.bfloat16, "heavy", 1)
    for name, variant in extension.CUDA_VARIANTS["quantize_row_col"].items():
        assert_bits_equal(extension.quantize_row_col(x, rht_signs=S, variant=variant)[1],
                          extension.quantize_row_col(x, rht_signs=S)[1], name)
    with pytest.raises(ValueError, match="variant"):
        extension.quantize_nvfp4(x, variant=len(extension.CUDA_VARIANTS["quantize_nvfp4"]))
    with pytest.raises(ValueError, match="variant"):
        extension.quantize_weight_2d(x, variant=len(extension.CUDA_VARIANTS["quantize_weight_2d"]))


# ----------------------------------------------------------------------------------
# The fast encoders against the originals (nvfp4_math.h, host path)
# ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fastenc():
    lib = build_shared_library("fastenc_check", [CHECK_SOURCE],
                               [CHECK_SOURCE, os.path.join(CSRC, "nvfp4_math.h")])
    lib.fastenc_check.argtypes = [ctypes.c_uint32, ctypes.c_uint64, ctypes.c_uint32,
                                  ctypes.POINTER(ctypes.c_uint32)]
    lib.fastenc_check.restype = ctypes.c_uint64
    return lib


def _check(lib, first, count, stride=1):
    bad = ctypes.c_uint32(0)
    mismatches = lib.fastenc_check(first, count, stride, ctypes.byref(bad))
    assert mismatches == 0, (f"{mismatches} magnitudes differ from the original encoders; "
                             f"first: bits 0x{bad.value:08X}")


# Where the outcome changes: the RNE thresholds, the grid points (SR's floor and its
# threshold scale), the clamp at 6, the bucket edges 2 and 4, Inf and NaN, and tiny
# values (subnormal products).
EDGES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0,
         8.0, float("inf"), 1e-45, 1.17549435e-38)


def test_fast_encoders_equal_the_originals(fastenc):
    _check(fastenc, 0, (1 << 31) // 4093 + 1, 4093)           # every FP32 magnitude, strided
    for edge in EDGES:
        bits = torch.tensor(edge, dtype=torch.float32).view(torch.int32).item()
        _check(fastenc, max(bits - 4096, 0), 8192)               # 4096 ulps either side
    _check(fastenc, 0x7F800001, 4096)                           # NaN payloads
    _check(fastenc, 0x7FC00000, 4096)


@pytest.mark.slow  # about 100 s on one core
def test_fast_encoders_equal_the_originals_exhaustively(fastenc):
    _check(fastenc, 0, 1 << 31)


# ----------------------------------------------------------------------------------
# Every variant in the CUDA simulator (fixed hard cases)
# ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim():
    return build_sim()


def _hard_case(dtype, seed):
    """[70, 160]: several tiles and a partial one in each direction; every value family
    of the block encoders (grid points and ties, underflowing blocks, huge values), and
    NaN-free so that the amax stays finite."""
    x = make_values((70, 160), dtype, "grid", seed)
    x[10:20] = make_values((10, 160), dtype, "underflow_blocks", seed + 1)
    x[30:40] = make_values((10, 160), dtype, "heavy", seed + 2)
    x[50] = 0.0
    x[51] = -0.0
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("stochastic", [False, True])
def test_every_1x16_and_16x16_variant_in_the_simulator(sim, dtype, stochastic):
    x = _hard_case(dtype, 3)[:64]
    rows, cols = x.shape
    seed, offset = 2 ** 64 - 3, 2 ** 32 - 5
    cases = [(1, v, S) for v in extension.CUDA_VARIANTS["quantize_nvfp4"].values()] + [
        (16, v, None) for v in extension.CUDA_VARIANTS["quantize_weight_2d"].values()]
    for block_rows, variant, signs in cases:
        got, _ = sim_quantize(sim, x, block_rows=block_rows, rht_signs=signs,
                              stochastic=stochastic, seed=seed, offset=offset, variant=variant)
        expected = extension.quantize_nvfp4(x, block="16x16" if block_rows == 16 else "1x16",
                                            rht_signs=signs, stochastic=stochastic, seed=seed,
                                            offset=offset)
        assert_bits_equal(got, expected, f"block_rows {block_rows}, variant {variant}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("stochastic", [False, True])
def test_every_fused_variant_in_the_simulator(sim, dtype, stochastic):
    x = _hard_case(dtype, 4)
    kwargs = dict(rht_signs=S, row_stochastic=stochastic, col_stochastic=stochastic, seed=77,
                  row_offset=2 ** 64 - 1, col_offset=12345)
    c_row, c_col = extension.quantize_row_col(x, **kwargs)
    for name, variant in extension.CUDA_VARIANTS["quantize_row_col"].items():
        row, col = sim_rowcol(sim, x, rht_signs=S, rowwise=True, row_sr=stochastic,
                              col_sr=stochastic, seed=77, row_offset=2 ** 64 - 1,
                              col_offset=12345, row_amax=None, col_amax=None, variant=variant)
        assert_bits_equal(row, c_row, f"fused {name}, rowwise")
        assert_bits_equal(col, c_col, f"fused {name}, columnwise")


# ----------------------------------------------------------------------------------
# SASS: no local memory in any kernel (sm_90a)
# ----------------------------------------------------------------------------------

def _nvcc_flags():
    with open(os.path.join(CSRC, "nvcc_flags.txt")) as f:
        flags = [line.split("#")[0].strip() for line in f]
    return [fl for fl in flags if fl and not fl.startswith("-gencode")] + [
        "-gencode=arch=compute_90a,code=sm_90a"]


# Kernels each variant launches (bf16 instances; the names the SASS must hold).
VARIANT_KERNELS = ("rows_1x16_kernel", "rows_1x16_prefetch_kernel", "rows_1x16_fastenc_kernel",
                   "rows_16x16_kernel", "rows_16x16_fastenc_kernel", "quantize_row_col_kernel",
                   "quantize_row_col_prefetch_kernel", "quantize_row_col_fastenc_kernel")


def test_sass_uses_no_local_memory():
    """About 15-30 s of nvcc (sm_90a only). .ci/nvcc_check.sh makes ptxas fail on spills
    for every target; this reads the sm_90a SASS itself."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed: the SASS of csrc/quantize.cu cannot be built here")
    tool = kernel_sass.cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (CUDA toolkit or Triton's bundled one) to read the SASS")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "quantize.cubin")
        subprocess.run(["nvcc", *_nvcc_flags(), "-cubin", f"-I{CSRC}", "-o", cubin,
                        os.path.join(CSRC, "quantize.cu")], check=True, capture_output=True)
        sass = subprocess.run([tool, "-sass", cubin], check=True, capture_output=True,
                              text=True).stdout
        usage = subprocess.run([tool, "-res-usage", cubin], check=True, capture_output=True,
                               text=True).stdout
    functions = re.findall(r"Function : (\S+)", sass)
    for kernel in VARIANT_KERNELS:
        assert any(re.search(rf"\d{kernel}I", f) for f in functions), kernel
        # The values-mode instance: the last template flag (kValues) set.
        assert any(re.search(rf"\d{kernel}I.*Lb1EEEv", f) for f in functions), \
            f"{kernel}: no values instance"
    local = [line for line in sass.splitlines() if re.search(r"\b(LDL|STL)(\.\w+)*\b", line)]
    assert not local, local[:5]
    stacks = re.findall(r"STACK:(\d+).*?LOCAL:(\d+)", usage)
    assert stacks and all(s == "0" and loc == "0" for s, loc in stacks), usage
    # Registers per kernel instance (shown with pytest -s): name, then REG.
    for name, regs in re.findall(r"Function (\S+):\s*REG:(\d+)", usage):
        print(f"{regs:>4} {name}")


# ----------------------------------------------------------------------------------
# On a GPU (`pytest -m gpu`): every variant equals the CPU build at large shapes
# ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cuda_ops():
    reason = _C.cuda_reason()
    if reason is not None:
        pytest.skip(f"cuda backend unavailable: {reason}")
    return _C


def _cpu(out):
    return tuple(t.cpu() for t in out)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(8192 + 7, 1024 + 16), (3, 256, 2048 - 16)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("sr", [False, True])
def test_every_variant_on_the_gpu(cuda_ops, shape, dtype, sr):
    x = make_values(shape, dtype, "heavy", 5)
    x.view(-1)[::997] = 0.0
    kwargs = dict(rht_signs=S, stochastic=sr, seed=2 ** 64 - 3, offset=2 ** 32 - 5)
    expected = cuda_ops.quantize_nvfp4(x, **kwargs)                       # the CPU build
    for name, variant in extension.CUDA_VARIANTS["quantize_nvfp4"].items():
        got = cuda_ops.quantize_nvfp4(x.cuda(), variant=variant, **kwargs)
        assert_bits_equal(_cpu(got), expected, f"quantize_nvfp4 {name}")
    rc = dict(rht_signs=S, row_stochastic=sr, col_stochastic=sr, seed=123, row_offset=5,
              col_offset=2 ** 40)
    c_row, c_col = cuda_ops.quantize_row_col(x, **rc)
    for name, variant in extension.CUDA_VARIANTS["quantize_row_col"].items():
        row, col = cuda_ops.quantize_row_col(x.cuda(), variant=variant, **rc)
        assert_bits_equal(_cpu(row), c_row, f"quantize_row_col {name}, rowwise")
        assert_bits_equal(_cpu(col), c_col, f"quantize_row_col {name}, columnwise")
    if len(shape) == 2 and shape[0] % 16 == 0:
        w = x
    else:
        w = x.reshape(-1, x.shape[-1])[:4096]
    c_row, c_col = cuda_ops.quantize_weight_2d(w, stochastic=sr, seed=9, offset=1)
    for name, variant in extension.CUDA_VARIANTS["quantize_weight_2d"].items():
        row, col = cuda_ops.quantize_weight_2d(w.cuda(), stochastic=sr, seed=9, offset=1,
                                               variant=variant)
        assert_bits_equal(_cpu(row), c_row, f"quantize_weight_2d {name}, rowwise")
        assert_bits_equal(_cpu(col), c_col, f"quantize_weight_2d {name}, columnwise")
