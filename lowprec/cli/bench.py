"""`lowprec bench`: run the benchmarks and print one table.

Each ``bench_*`` module of the package ``lowprec.bench`` measures one thing and writes one
record (``lowprec.bench.common.write_results``; the fields are documented in
lowprec/bench_schema.py). `lowprec bench` runs each as ``python -m lowprec.bench.<name>``
in a fresh process, with its records going to ``--out`` (``LOWPREC_BENCH_RESULTS``),
reads back the records written during this run and prints one table. The benchmarks
are modules of the installed package, so it runs the same from a wheel as from a
checkout. Without a GPU it runs the CPU benchmarks (``CPU_BENCHMARKS``) with short
settings: the others measure GPU kernels and exit at once.
"""

import json
import os
import pkgutil
import subprocess
import sys
import time

import lowprec.bench
from lowprec import bench_schema, device
from lowprec.cli.common import out_dir
from lowprec.planner import cost
from lowprec.table import format_table

# module -> arguments: a few steps each, so that the whole run takes seconds to a minute.
CPU_BENCHMARKS = {
    "bench_train_step_cpu": ("--steps", "3", "--warmup", "1"),
    "bench_grouped_linear": ("--steps", "3", "--warmup", "1"),
    "bench_cpu_quantize_memory": ("--log2-numel", "22"),
}
SUMMARY = "bench.json"          # this run's table, in --out beside the records


def benchmarks():
    """The full names of the modules `lowprec bench` runs: ``lowprec.bench.bench_*``."""
    package = lowprec.bench
    return sorted(f"{package.__name__}.{module.name}"
                  for module in pkgutil.iter_modules(package.__path__)
                  if module.name.startswith("bench_") and not module.ispkg)


def bench_rows(source, data):
    """Table rows of one benchmark record; ValueError (naming ``source``) if it is not one."""
    rows = bench_schema.check_record(data, source)
    script = data.get("script") or source
    return [{"source": script,
             "kernel": row["name"] if row["impl"] is None else f"{row['name']} [{row['impl']}]",
             "shape": row["shape"], "time_ms": row["time_ms"],
             "throughput": row["throughput"], "unit": row["unit"] or "",
             "ratio": row["of_baseline"], "ratio_to": row["baseline"]}
            for row in rows]


def format_bench_table(rows):
    return format_table(
        ("kernel", "shape", "time ms", "throughput", "% of same-run baseline", "script"),
        [(r["kernel"], r["shape"], f"{r['time_ms']:.4g}",
          "" if r["throughput"] is None else f"{r['throughput']:.4g} {r['unit']}",
          "" if r["ratio"] is None else f"{100 * r['ratio']:.0f}% of {r['ratio_to']}",
          r["source"]) for r in rows])


def _run_module(module, out, module_args=()):
    """``python -m module`` with its records going to ``out``; returns (ok, seconds)."""
    start = time.perf_counter()
    env = dict(os.environ, LOWPREC_BENCH_RESULTS=str(out.resolve()))
    with open(out / f"{module.rpartition('.')[2]}.log", "w") as log:
        status = subprocess.run([sys.executable, "-m", module, *module_args], cwd=out,
                                env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    return status == 0, time.perf_counter() - start


def _last_line(path):
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def run(args):
    facts = device.facts()
    modules = benchmarks()
    gpu = facts["gpu"] is not None
    module_args = {}
    if not gpu:
        why = next((n[len("no GPU: "):] for n in facts["notes"] if n.startswith("no GPU: ")),
                   "none visible")
        modules = [m for m in modules if m.rpartition(".")[2] in CPU_BENCHMARKS]
        if not modules:
            print(f"no GPU ({why}) and no CPU benchmark to run")
            return 0
        module_args = {m: CPU_BENCHMARKS[m.rpartition(".")[2]] for m in modules}
        print(f"no GPU ({why}): running the {len(modules)} CPU benchmarks with short "
              f"settings (the others measure GPU kernels)")
    elif not modules:
        print("lowprec bench: nothing to run, no benchmark module in lowprec.bench")
        return 1
    print("device:\n" + device.format_facts(facts))
    out = out_dir(args.out)
    started = time.time()
    failed = []
    for module in modules:
        extra = module_args.get(module, ())
        name = module.rpartition(".")[2]
        print(f"running {' '.join(['python -m', module, *extra])} ...", flush=True)
        ok, seconds = _run_module(module, out, extra)
        log = out / f"{name}.log"
        said = f": {_last_line(log)}" if not gpu else ""
        print(f"  {'ok' if ok else 'FAILED'} in {seconds:.0f} s{said} (log: {log})")
        if not ok:
            failed.append(name)
    rows, files = [], []
    # Records the modules wrote during this run; older ones are not this run's figures.
    for path in sorted(out.glob("*.json")):
        if path.name != SUMMARY and path.stat().st_mtime >= started:
            data = json.loads(path.read_text())
            files.append({"file": str(path), "data": data})
            try:
                rows.extend(bench_rows(path.name, data))
            except ValueError as err:
                print(f"  not tabulated: {err}")
    print()
    print(format_bench_table(rows) if rows else "no results were written by the benchmarks")
    if gpu:                          # the planner's costs are GPU GEMM timings
        _cache_device_costs([f["file"] for f in files])
    summary = out / SUMMARY
    summary.write_text(json.dumps({"device": facts, "command": " ".join(sys.argv),
                                   "failed": failed, "rows": rows, "files": files},
                                  indent=1) + "\n")
    print(f"\nwrote {summary}")
    return 1 if failed else 0


def _cache_device_costs(result_files):
    """Store the GEMM costs this run measured where the planner looks for them."""
    kind, _ = cost.detect_device()
    measured = cost.load_bench_costs(result_files, want=lambda _device: True)
    if measured is None:
        print(f"\nno GEMM costs measured in this run (bench_nvfp4_gemm writes them); the "
              f"planner keeps using {cost.user_cache_path()} if present, else its defaults")
        return
    costs, source = measured
    path = cost.write_user_costs(kind, costs, source)
    print(f"\nplanner costs for {kind} (time per FLOP relative to bf16): "
          f"{', '.join(f'{p} {t:.3g}' for p, t in costs.items())}; wrote {path}")


def add_parser(sub):
    bench = sub.add_parser("bench", help="run the benchmarks of lowprec.bench (GPU kernels; "
                           "without a GPU the CPU benchmarks, short settings)")
    bench.add_argument("--out", default="lowprec-bench", help="directory for the records, "
                       "logs and bench.json (default: ./lowprec-bench)")
    bench.set_defaults(func=run)
