#!/usr/bin/env bash
# One-call GPU proof: install, test and benchmark lowprec on a bare GPU machine, in at most
# 9.5 minutes, and leave JSON per benchmark plus one summary.md in one folder.
#
#   bash bench/gpu_check.sh [--out DIR]     on the GPU (default DIR:
#                                           bench/results/<device>-<UTC date>/)
#   bash bench/gpu_check.sh --only tests_gpu,bench_train_step [--out DIR]
#                                           a rerun of some phases (the wheels, the
#                                           install and the dispatch always run)
#   bash bench/gpu_check.sh --smoke         the same flow on CPU: Triton interpreter, tiny
#                                           shapes, results in a temporary folder that is
#                                           deleted (nothing recorded); CI runs this
#
# The GPU machine has Python 3.12, torch + CUDA 13, Triton, nvcc 13 and nvidia-ml-py, but
# no pulp/highspy (nor what PuLP 4 imports): `bash bench/device_wheels.sh` puts their
# wheels (Python 3.12, manylinux x86_64) in .whl/ of the checkout before the run (carry
# .whl), and they are installed here first.
#
# Phases run in order, each under its own time box (timeout); a phase that fails or runs
# out of time is recorded as such and the next one starts. Every figure comes from a
# benchmark script's own JSON; this script only runs them and tabulates.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=0
OUT=""
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1; shift ;;
    --only) [ $# -ge 2 ] || { echo "gpu_check.sh: --only needs phase names" >&2; exit 2; }
            ONLY=",$2,"; shift 2 ;;
    --out) [ $# -ge 2 ] || { echo "gpu_check.sh: --out needs a folder" >&2; exit 2; }
           OUT=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (use --smoke, --out DIR, --only P1,P2)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
START=$(date +%s)
BUDGET=520            # seconds for all phases; the summary takes the rest of 9.5 minutes
if [ "$SMOKE" = 1 ]; then
  export TRITON_INTERPRET=1 LOWPREC_BENCH_SMOKE=1
  OUT=$(mktemp -d)
  trap 'rm -rf "$OUT"' EXIT
elif [ -z "$OUT" ]; then
  gpu=$($PY -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))" \
        2>/dev/null || echo no-gpu)
  OUT="bench/results/${gpu}-$(date -u +%Y%m%dT%H%M%SZ)"
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PHASES="$OUT/phases.tsv"
: > "$PHASES"

# phase NAME SECONDS CMD...: run CMD with a time box, log to $OUT/NAME.log, record the
# exit status (124: out of time) and the seconds it took.
phase() {
  local name=$1 box=$2
  shift 2
  case "$name" in wheels|install|dispatch) ;; *)
    [ -z "$ONLY" ] || [[ "$ONLY" == *",$name,"* ]] || return 0 ;;
  esac
  local t0=$(date +%s)
  # The whole run ends within BUDGET seconds: a box never reaches past it.
  local left=$(( BUDGET - (t0 - START) ))
  [ "$box" -le "$left" ] || box=$left
  if [ "$box" -le 0 ]; then
    printf '%s\t%s\t%s\t%s\n' "$name" skipped 0 0 >> "$PHASES"
    echo "== $name: skipped, the ${BUDGET}s budget is spent"
    return
  fi
  echo "== $name (time box ${box}s)"
  timeout --kill-after=10 "$box" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$box" >> "$PHASES"
  [ "$rc" = 0 ] || { echo "   $name: exit $rc (log: $OUT/$name.log)"; tail -5 "$OUT/$name.log"; }
}

# bench NAME SECONDS MODULE ARGS...: a benchmark phase, `python -m lowprec.bench.MODULE`,
# writing its JSON into $OUT (LOWPREC_BENCH_RESULTS, lowprec/bench/common.py).
bench() {
  local name=$1 box=$2 module=$3
  shift 3
  phase "$name" "$box" env LOWPREC_BENCH_RESULTS="$OUT" "$PY" -m "lowprec.bench.$module" "$@"
}

if [ "$SMOKE" = 1 ]; then
  # Same flow, CPU-sized: no install (the checkout is already installed), tiny shapes.
  phase dispatch 30 "$PY" -m lowprec.cli info --dispatch --json
  phase tests 60 "$PY" -m pytest -x -q -p no:cacheprovider tests/api/test_dispatch.py \
    -k gpu_tables
  bench bench_quantize_row_col 60 bench_quantize_row_col --shapes 40x64 --reps 1
  # Every kernel variant against the reference; winners to a copy only (never the
  # committed kernels/winners.json in a smoke run).
  bench sweep_variants 120 sweep_variants --shapes 40x64 --reps 1 --write-winners \
    --winners-copy "$OUT/winners.json"
  bench bench_nvfp4_gemm 60 bench_nvfp4_gemm --shapes 40x32x64 --reps 1
else
  if ls .whl/*.whl > /dev/null 2>&1; then
    phase wheels 20 "$PY" -m pip install -q --no-index --no-deps --no-compile \
      --target .site .whl/*.whl
    export PYTHONPATH=$ROOT/.site:${PYTHONPATH:-}
  fi
  # The CUDA extension, built on every core (LOWPREC_REQUIRE_EXT: a failed build fails).
  phase install 140 env MAX_JOBS="$(nproc)" LOWPREC_REQUIRE_EXT=1 \
    "$PY" -m pip install -q --no-build-isolation --no-deps -e .
  phase dispatch 15 "$PY" -m lowprec.cli info --dispatch --json
  # Phases in order of what a first call must not miss (the budget cuts the tail; the
  # rerun takes it with --only): the GPU tests, the variant sweep, the training step, the
  # NVFP4 GEMMs, then the wider suite and the single quantize kernels.
  # pytest-xdist spreads the Triton compiles over the cores (-v: names in the log).
  parallel=()
  "$PY" -c "import xdist" 2> /dev/null && parallel=(-n 12 -v)
  # Every -m gpu test (131; the H200 ran 85 in 90 s serially, so ~140 s serial): no -x,
  # one call must show every failure, not the first.
  gpu_workers=()
  [ ${#parallel[@]} -gt 0 ] && gpu_workers=(-n 4 -v)
  phase tests_gpu 130 "$PY" -m pytest -q -p no:cacheprovider "${gpu_workers[@]}" -m gpu tests
  # Issue 21: every variant of every quantize kernel (lowprec/kernels/variants.py), bits
  # checked against its backend's baseline, the exact ones timed against a same-run
  # copy; the fastest per (op, backend, capability, dtype) goes into kernels/winners.json
  # (commit it with the results) and $OUT/winners.json. No op starts after 90 s.
  bench sweep_variants 120 sweep_variants --shapes 8192x4096 --dtypes bfloat16 \
    --reps 20 --budget-s 90 --write-winners --winners-copy "$OUT/winners.json"
  # Both models, every mode, eager, each in a fresh process; compiled and CUDA-graphed
  # steps on a rerun: --only bench_train_step with BENCH_TRAIN_EXEC="compile cudagraphs".
  bench bench_train_step 140 bench_train_step --model gpt355m llama4096 --blocks 2 \
    --exec ${BENCH_TRAIN_EXEC:-eager} --steps 5 --warmup 2
  # The NVFP4 GEMM candidates, the emulation's GEMM on values by mm + epilogue and by
  # cuBLASLt (lowprec.backends.cuda.VALUES_GEMM waits for these rows): Llama-3 8B shapes
  # (M = 8192 tokens) and 8192^3, medians of device-event timings.
  bench bench_nvfp4_gemm 50 bench_nvfp4_gemm --reps 10 \
    --shapes 8192x8192x8192,8192x6144x4096,8192x4096x4096,8192x28672x4096,8192x4096x14336
  # The Triton kernels compiled for the device against the reference, every edge case.
  phase tests_api_kernels_training 150 "$PY" -m pytest -q -p no:cacheprovider \
    "${parallel[@]}" tests/api tests/kernels tests/training
  # Single quantize kernels, few repetitions (medians of device-event timings). 8192x1024
  # is the 355M GPT's X: "amax+rne" minus "rne" there is what a one-pass quantizer of a
  # tensor that fits on chip would save (bench/KERNELS.md, the Hopper bytes).
  bench bench_quantize_row_col 45 bench_quantize_row_col --backends triton,cuda \
    --shapes 8192x1024,8192x4096,8192x14336 --reps 20
  bench bench_quantize_cuda 30 bench_quantize_cuda --shapes 8192x8192,8192x4096 --iters 20
  bench bench_amax 20 bench_amax --shapes 8192x4096 --reps 20
  bench bench_quantize_2d 25 bench_quantize_2d --backends triton,cuda \
    --shapes 4096x4096,14336x4096 --reps 20
fi
cp "$OUT/dispatch.log" "$OUT/dispatch.json" 2>/dev/null

# summary.md: every phase, then every figure the benchmarks wrote, as one table.
"$PY" - "$OUT" "$SMOKE" "$(( $(date +%s) - START ))" <<'PYEOF' > "$OUT/summary.md"
import json, pathlib, sys
from lowprec.cli.bench import bench_rows, format_bench_table
out, smoke, seconds = pathlib.Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
print(f"# lowprec GPU check{' (smoke run on CPU: nothing measured)' if smoke else ''}\n")
import torch
if torch.cuda.is_available():
    major, minor = torch.cuda.get_device_capability()
    print(f"device: {torch.cuda.get_device_name()} (compute capability {major}.{minor}), "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}\n")
else:
    print(f"device: CPU only, torch {torch.__version__}\n")
print(f"total {seconds} s\n\n| phase | exit | seconds | time box |\n|---|---|---|---|")
for line in (out / "phases.tsv").read_text().splitlines():
    name, rc, took, box = line.split("\t")
    status = "ok" if rc == "0" else ("OUT OF TIME" if rc in ("124", "137") else f"FAILED ({rc})")
    print(f"| {name} | {status} | {took} | {box} |")
dispatch = out / "dispatch.json"
if dispatch.exists():
    print("\n## dispatch\n\n```\n" + dispatch.read_text().strip() + "\n```")
rows = []
for path in sorted(out.glob("*.json")):
    if path.name in ("dispatch.json", "winners.json"):
        continue
    try:
        rows.extend(bench_rows(path.stem, json.loads(path.read_text())))
    except (ValueError, KeyError, TypeError) as err:
        print(f"\n{path.name}: unreadable ({err})")
print("\n## figures\n\n```\n" + (format_bench_table(rows) if rows else
      "none recorded") + "\n```")
winners = out / "winners.json"
if winners.exists():
    try:
        table = json.loads(winners.read_text()).get("winners", {})
        lines = [f"{op} {backend} {cap} {dtype}: {name}"
                 for op, per_backend in table.items()
                 for backend, per_cap in per_backend.items()
                 for cap, per_dtype in per_cap.items()
                 for dtype, name in per_dtype.items()]
        print("\n## variant winners (kernels/winners.json)\n\n```\n" +
              ("\n".join(lines) or "none") + "\n```")
    except ValueError as err:
        print(f"\nwinners.json: unreadable ({err})")
PYEOF
cat "$OUT/summary.md"
failed=$(awk -F'\t' '$2 != "0"' "$PHASES" | wc -l)
[ "$failed" = 0 ]
