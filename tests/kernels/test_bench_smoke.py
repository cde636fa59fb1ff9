"""The benchmark modules (``python -m lowprec.bench.<name>``) run end to end (CPU smoke mode: logic only, nothing measured).

On a machine without a GPU each script prints that and exits 0; with
``LOWPREC_BENCH_SMOKE=1`` it runs its whole loop on tiny CPU tensors under the
interpreter and writes nothing, which keeps the scripts working between GPU sessions.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODULES = {
    "bench_quantize_row_col": "40x64",
    "bench_amax": "40x64",
    "bench_quantize_2d": "32x64",
    "bench_nvfp4_gemm": "40x32x64",
    "sweep_variants": "40x64",        # every kernel variant against the reference
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_bench_module_runs(module):
    env = dict(os.environ, LOWPREC_BENCH_SMOKE="1", TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-m", f"lowprec.bench.{module}", "--shapes",
                          MODULES[module], "--reps", "1"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "wrote nothing" in out.stdout
