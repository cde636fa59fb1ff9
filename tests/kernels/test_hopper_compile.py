"""Every kernel compiles for Hopper (sm_90), checked without a GPU (kernels/aot.py).

The interpreter proves the bits, not that the code compiles for the GPU, whose front end
is stricter and whose output alone shows spills and the instructions chosen. The
compilation runs in a fresh process without ``TRITON_INTERPRET`` (under the interpreter
``@jit`` returns objects the compiler cannot take).
"""

import json
import os
import subprocess
import sys

import pytest
import triton

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "ptxas")),
                                reason="needs the ptxas that Triton's NVIDIA backend ships")


@pytest.fixture(scope="module")
def facts():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "0")
    out = subprocess.run([sys.executable, "-m", "lowprec.kernels.aot", "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


NAMES = ["quantize_row_col row RNE", "quantize_row_col row SR", "quantize_row_col col RHT RNE",
         "quantize_row_col row+col RHT RNE", "quantize_row_col row+col RHT SR", "quantize_2d row+col",
         "amax row+col RHT", "dequantize", "quantize_fp8", "gemm (a) fused",
         "gemm (c) fp16 tiles", "gemm (b) epilogue", "scaled_mm scales"]


@pytest.mark.parametrize("name", NAMES)
def test_compiles_without_spills(facts, name):
    f = facts[name]
    assert f["LOCAL"] == 0 and f["STACK"] == 0, f      # nothing spilled to local memory
    assert not f["ftz"]                                # subnormals kept (E2M1 code trick)
    if name.startswith("quantize_row_col") or name.startswith("amax"):
        assert f["ld_v4"]                              # 16-byte loads


@pytest.mark.parametrize("name", ["gemm (a) fused", "gemm (c) fp16 tiles"])
def test_gemm_uses_hopper_tensor_cores(facts, name):
    assert facts[name]["wgmma"] and facts[name]["fp32_acc"]
    if "fused" in name:
        assert facts[name]["e4m3_cvt"]                 # codes decoded by cvt e4m3x2 -> f16x2
