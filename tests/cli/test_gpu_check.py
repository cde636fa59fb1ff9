"""bench/gpu_check.sh --smoke: the one-call GPU proof's flow, run on CPU.

The smoke run takes the GPU run's path through the script (phases with time boxes, the
dispatch table, a test phase, benchmark phases whose JSON would be collected, summary.md
printed last) on tiny shapes under the Triton interpreter, and must record nothing.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "gpu_check.sh")
RESULTS = os.path.join(ROOT, "bench", "results")


def listing():
    return sorted(os.listdir(RESULTS)) if os.path.isdir(RESULTS) else []


def run(*args):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", SCRIPT, *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_smoke_run_passes_and_records_nothing():
    before = listing()
    out = run("--smoke")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = out.stdout[out.stdout.index("# lowprec GPU check"):]
    for phase in ("dispatch", "tests", "bench_quantize_row_col", "bench_nvfp4_gemm"):
        assert f"| {phase} | ok |" in summary, summary
    assert '"quantize_row_col": "cpu:quantize_row_col"' in summary
    assert summary.rstrip().endswith("```")           # the summary is printed last
    assert listing() == before


def test_bad_argument_is_one_line_and_exit_2():
    out = run("--bogus")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "'--bogus'" in out.stderr
