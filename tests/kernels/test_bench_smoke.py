"""The benchmark scripts run end to end (CPU smoke mode: logic only, nothing measured).

On a machine without a GPU each script prints that and exits 0; with
``LOWPREC_BENCH_SMOKE=1`` it runs its whole loop on tiny CPU tensors under the
interpreter and writes nothing, which keeps the scripts working between GPU sessions.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPTS = {
    "bench_quantize_row_col.py": "40x64",
    "bench_amax.py": "40x64",
    "bench_quantize_2d.py": "32x64",
    "bench_nvfp4_gemm.py": "40x32x64",
    "sweep_variants.py": "40x64",     # every kernel variant against the reference
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_bench_script_runs(script):
    env = dict(os.environ, LOWPREC_BENCH_SMOKE="1", TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), "--shapes",
                          SCRIPTS[script], "--reps", "1"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "wrote nothing" in out.stdout
