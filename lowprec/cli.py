"""The lowprec command.

  lowprec demo      train a small GPT three ways: high precision (FP32 on a CPU, BF16
                    autocast on a GPU), the NVFP4 recipe and a planned mix (main job)
  lowprec demo --quant-table   the quantization error table of each format (seconds)
  lowprec demo --ablation      the recipe ablation (long)
  lowprec info      backends available here and why not, device facts, versions
  lowprec info --dispatch [--capability 9.0] [--json]   op -> implementation table
  lowprec bench     run the benchmarks of bench/ and print one table (without a GPU:
                    its CPU benchmarks, with short settings)
  lowprec plan      print the planner's plan for the demo model at a budget
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import lowprec
from lowprec import _C, bench_schema, device, dispatch, quant_report
from lowprec.demo import ablation, report, train
from lowprec.demo import corpus as corpus_mod
from lowprec.planner import cost, options
from lowprec.planner.options import BudgetError, OptionError
from lowprec.table import format_table


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _out_dir(path):
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


# -- info ------------------------------------------------------------------------------

OPTIONAL_MODULES = (("triton", "Triton kernels"), ("matplotlib", "the demo's plot"),
                    ("transformers", "the Hugging Face integration test"))


def _build_summary():
    """What setup.py built (lowprec/_build_info.json) and what it lacks, in one line."""
    info = _C.build_info()
    if info is None:
        return "no build record (installed without building the extension)"
    built = {"cuda": "the CUDA extension (GPU + CPU kernels)", "cpu": "the CPU extension",
             None: "no extension"}[info.get("extension")]
    note = _C.build_note()
    return built if note is None else f"{built}; {note}"


def _info(args):
    if args.dispatch or args.capability or args.json:
        return dispatch.main(args.capability, args.json)

    print(f"lowprec {lowprec.__version__} ({Path(lowprec.__file__).parent})")
    print(f"build: {_build_summary()}")
    facts = device.facts()
    print("device:")
    print(device.format_facts(facts))
    device_types = ["cuda", "cpu"] if facts["gpu"] is not None else ["cpu"]
    for device_type in device_types:
        print(f"backends for {device_type} tensors (auto picks the first available of "
              f"{', '.join(lowprec.backends.AUTO_ORDER[device_type])}):")
        for name, reason in lowprec.available(return_reason=True,
                                              device_type=device_type).items():
            print(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    print("optional packages:")
    for module, use in OPTIONAL_MODULES:
        found = importlib.util.find_spec(module) is not None
        print(f"  {module:<13} {'installed' if found else 'not installed'} (for {use})")
    return 0


# -- demo ------------------------------------------------------------------------------

def _check_quant_table_args(args):
    """--m/--k/--n/--backend, before any tensor is made."""
    for name in ("m", "k", "n"):
        if getattr(args, name) < 1:
            raise options.OptionError(f"--{name} must be >= 1; got {getattr(args, name)}")
    if args.k % 16:
        raise options.OptionError(f"--k must be a multiple of 16 (NVFP4 blocks of 16 along "
                                  f"K); got {args.k}")
    options.check_backend(args.backend, "cuda" if torch.cuda.is_available() else "cpu")


def _quant_table(args):
    _check_quant_table_args(args)
    x, w = quant_report.make_inputs(m=args.m, k=args.k, n=args.n, seed=args.seed)
    print(f"Quantization error on a generated activation X [{args.m}, {args.k}] "
          f"(Gaussian, 1/64 of channels x20) and weight W [{args.n}, {args.k}]:\n")
    print(quant_report.format_table(quant_report.error_rows(x, w, backend=args.backend)))
    return 0


DEMO_DESCRIPTIONS = {
    "bf16": "every layer high precision ({high})",
    "nvfp4": "NVFP4 recipe, default BF16 layers (last ~15% of blocks)",
    "planned": "planner's mix at budget {budget}",
}
HIGH_PRECISION = {"cpu": "FP32: no BF16 autocast on a CPU", "cuda": "BF16 autocast"}


def _provenance():
    """lowprec's version, and the git commit when it runs from a checkout (else None)."""


    root = Path(lowprec.__file__).resolve().parent.parent
    commit = None
    if (root / ".git").exists():
        try:
            done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                  capture_output=True, text=True, timeout=10)
            if done.returncode == 0 and done.stdout.strip():
                commit = done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = None               # no git here: the version alone identifies it
    return {"version": lowprec.__version__, "commit": commit}


def _backend_words(device_type):
    """"quantization backend X" for what ``auto`` runs on ``device_type``, with the
    reason the preferred backend is not it (a failed build shows here, not only at the
    end of a long run)."""
    backend = train.auto_backend(torch.device(device_type))
    preferred = lowprec.backends.AUTO_ORDER[device_type][0]
    words = f"quantization backend {backend}"
    if backend != preferred:
        reason = lowprec.available(return_reason=True, device_type=device_type).get(preferred)
        words += f" ({preferred} unavailable: {reason})"
    note = _C.build_note()      # e.g. a CUDA build that failed and left the CPU kernels
    return words if note is None else f"{words}; {note}"


def _threads_line(threads):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"torch CPU threads: {threads} of {cores} cores here (--threads N to change; "
            f"small models run fastest on 1, and on a busy machine more threads stall)")


def _write_outputs(out, stem, record, plot):
    """JSON always; the PNG (``plot(record, path)``) when matplotlib is there."""
    record = dict(record, device=device.facts(), lowprec=_provenance(),
                  command=" ".join(sys.argv))
    json_path = report.write_json(record, out / f"{stem}.json")
    png_path, why_not = plot(record, out / f"{stem}.png")
    print(f"\nwrote {json_path}")
    print(f"wrote {png_path}" if png_path else why_not)


def _demo(args):
    if args.quant_table:
        return _quant_table(args)
    if args.ablation:
        return _ablation(args)

    if args.budget is not None:
        options.check_budget(args.budget)
    preset = train.default_preset(args.quick)
    model_cfg, train_cfg = train.PRESETS[preset]
    steps = args.steps or train_cfg.steps
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"lowprec demo: byte-level GPT (d_model {model_cfg.d_model}, {model_cfg.n_layer} "
          f"blocks, seq {model_cfg.seq_len}), {steps} steps of batch "
          f"{train_cfg.batch_size}, seed {args.seed}, preset '{preset}', "
          f"{_backend_words(device_type)}")
    record = train.run_demo(preset, steps=args.steps, budget=args.budget, seed=args.seed,
                            progress=not args.no_progress, threads=args.threads,
                            log=lambda text: print(text, flush=True),
                            on_start=lambda used: print(_threads_line(used), flush=True))
    runs = record["runs"]
    print(f"\ncorpus: {record['corpus']['name']}, {record['corpus']['bytes']} bytes "
          f"(sha256 {record['corpus']['sha256'][:12]})")
    descriptions = {k: v.format(budget=record["budget"],
                                high=HIGH_PRECISION.get(record["device_type"], "FP32"))
                    for k, v in DEMO_DESCRIPTIONS.items()}
    for name in ("nvfp4", "planned"):
        print(f"\nplan of '{name}' ({descriptions[name]}):")
        print(runs[name]["plan"].table())
    print("\nplan columns:\n" + runs["nvfp4"]["plan"].legend())
    cfg = record["train_config"]
    print(f"\nfinal losses (cross-entropy, nats per byte; final val loss on "
          f"{cfg['final_eval_batches']} batches of the held-out last 10%, where the "
          f"progress lines' val is on {cfg['eval_batches']}):")
    print(report.loss_table(runs, descriptions))
    print("(one seed: at the CPU size, seed-to-seed spread is about 1% of the loss, see "
          "experiments/ablation/, so gaps of that size are noise, not a ranking)")
    print("\n" + report.spike_summary(runs))
    print(f"\ntotal {record['seconds']:.0f} s ({record['device_type']}, "
          f"{record['threads']} thread(s), quantization backend {record['backend']})")
    title = f"lowprec demo: {preset} preset, {steps} steps, seed {args.seed}"
    _write_outputs(_out_dir(args.out), "demo", record, lambda rec, path: report.plot_losses(
        {run.get("label", name): [run] for name, run in rec["runs"].items()}, path, title))
    return 0


def _ablation(args):
    preset = train.default_preset(args.quick)
    seeds = tuple(range(args.seed, args.seed + args.seeds))
    print(f"lowprec recipe ablation: preset '{preset}', seeds {list(seeds)}, configs "
          f"{', '.join(ablation.CONFIGS)}")
    record = ablation.run_ablation(preset, seeds=seeds, steps=args.steps,
                                   progress=not args.no_progress, threads=args.threads,
                                   log=lambda text: print(text, flush=True))
    print("\n" + ablation.format_summary(record))
    title = (f"recipe ablation: {preset} preset, {record['train_config']['steps']} steps, "
             f"seeds {list(seeds)}")
    _write_outputs(_out_dir(args.out), "ablation", record,
                   lambda rec, path: ablation.plot(rec, path, title))
    return 0


# -- bench -----------------------------------------------------------------------------
#
# Each bench/bench_*.py script measures one thing and writes one record under
# bench/results/ (bench/common.py's write_results; the fields are documented in
# lowprec/bench_schema.py). `lowprec bench` runs them all, reads back the records they
# wrote during this run and prints one table. Without a GPU it runs the CPU benchmarks
# (CPU_BENCHMARKS) with short settings: the others measure GPU kernels and exit at once.

# script -> arguments: a few steps each, so that the whole run takes seconds to a minute.
CPU_BENCHMARKS = {
    "bench_train_step_cpu.py": ("--steps", "3", "--warmup", "1"),
    "bench_grouped_linear.py": ("--steps", "3", "--warmup", "1"),
    "bench_cpu_quantize_memory.py": ("--log2-numel", "22"),
}


NO_BENCH_SCRIPTS = ("looked in {looked}. The scripts are part of the source repository, "
                    "not of the installed package: run `lowprec bench` in a clone of the "
                    "repository, or pass --bench-dir PATH/TO/bench")


def find_bench_dir(explicit=None):
    """bench/ beside the lowprec package (a source checkout), or None."""
    path = Path(explicit) if explicit else Path(lowprec.__file__).resolve().parent.parent / "bench"
    return path if path.is_dir() else None


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


def _run_bench_script(script, log_dir, script_args=()):
    """Run one script from the repository root; returns (ok, seconds)."""
    start = time.perf_counter()
    with open(log_dir / f"{script.stem}.log", "w") as log:
        status = subprocess.run([sys.executable, str(script), *script_args],
                                cwd=script.parent.parent, stdout=log,
                                stderr=subprocess.STDOUT).returncode
    return status == 0, time.perf_counter() - start


def _last_line(path):
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _bench(args):
    facts = device.facts()
    bench_dir = find_bench_dir(args.bench_dir)
    scripts = sorted(bench_dir.glob("bench_*.py")) if bench_dir else []
    looked = args.bench_dir or "bench/ beside the lowprec package"
    where = (f"{len(scripts)} benchmark scripts in {bench_dir}" if scripts else
             f"and no benchmark scripts: {NO_BENCH_SCRIPTS.format(looked=looked)}")
    gpu = facts["gpu"] is not None
    script_args = {}
    if not gpu:
        why = next((n[len("no GPU: "):] for n in facts["notes"] if n.startswith("no GPU: ")),
                   "none visible")
        scripts = [s for s in scripts if s.name in CPU_BENCHMARKS]
        if not scripts:
            print(f"no GPU ({why}) and no CPU benchmark to run ({where})")
            return 0
        script_args = {s.name: CPU_BENCHMARKS[s.name] for s in scripts}
        print(f"no GPU ({why}): running the {len(scripts)} CPU benchmarks of {bench_dir} "
              f"with short settings (the others measure GPU kernels)")
    elif not scripts:
        print(f"lowprec bench: nothing to run, {where}")
        return 1
    print("device:\n" + device.format_facts(facts))
    out = _out_dir(args.out)
    results_dir = bench_dir / "results"
    started = time.time()
    failed = []
    for script in scripts:
        extra = script_args.get(script.name, ())
        print(f"running {' '.join([script.name, *extra])} ...", flush=True)
        ok, seconds = _run_bench_script(script, out, extra)
        log = out / f"{script.stem}.log"
        said = f": {_last_line(log)}" if not gpu else ""
        print(f"  {'ok' if ok else 'FAILED'} in {seconds:.0f} s{said} (log: {log})")
        if not ok:
            failed.append(script.name)
    rows, files = [], []
    # Files the scripts wrote during this run; older results are not this run's figures.
    for path in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []:
        if path.stat().st_mtime >= started:
            data = json.loads(path.read_text())
            files.append({"file": str(path), "data": data})
            try:
                rows.extend(bench_rows(path.name, data))
            except ValueError as err:
                print(f"  not tabulated: {err}")
    print()
    print(format_bench_table(rows) if rows else "no results were written by the scripts")
    if gpu:                          # the planner's costs are GPU GEMM timings
        _cache_device_costs([f["file"] for f in files])
    summary = out / "bench.json"
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
        print(f"\nno GEMM costs measured in this run (bench_nvfp4_gemm.py writes them); the "
              f"planner keeps using {cost.user_cache_path()} if present, else its defaults")
        return
    costs, source = measured
    path = cost.write_user_costs(kind, costs, source)
    print(f"\nplanner costs for {kind} (time per FLOP relative to bf16): "
          f"{', '.join(f'{p} {t:.3g}' for p, t in costs.items())}; wrote {path}")


# -- plan ------------------------------------------------------------------------------

def check_output_file(path, option):
    """Refuse (OptionError: one line, exit 2) a file that cannot be written, before any
    work: ``lowprec plan --json /nonexistent/dir/p.json`` used to plan in full and then
    end with a traceback."""
    target = Path(path)
    parent = target.parent
    if target.is_dir():
        raise OptionError(f"{option} {path}: is a directory; give a file name")
    if not parent.is_dir():
        raise OptionError(f"{option} {path}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise OptionError(f"{option} {path}: not writable here")


def _plan(args):
    options.check_budget(args.budget)
    if args.json:
        check_output_file(args.json, "--json")
    preset = train.default_preset(args.quick)
    model_cfg, train_cfg = train.PRESETS[preset]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with train.cpu_threads(device, args.threads):
        print(_threads_line(torch.get_num_threads()), flush=True)
        model = train.build_model(model_cfg, args.seed, device)
        batches = train.calibration_batches(corpus_mod.load(), model_cfg, train_cfg, device)
        model = lowprec.convert(model, budget=args.budget, calibration=batches,
                                loss_fn=train.planner_loss(device))
    print(f"plan for the demo model (preset '{preset}') at budget {args.budget}, "
          f"{len(batches)} calibration batches (untrained weights):")
    print(model.lowprec_plan.table())
    print("\nplan columns:\n" + model.lowprec_plan.legend())
    if args.json:
        Path(args.json).write_text(model.lowprec_plan.to_json(indent=1))
        print(f"wrote {args.json}")
    return 0


# -- parser ----------------------------------------------------------------------------

def build_parser():
    parser = _Parser(prog="lowprec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="backends available here, and why not; versions")
    info.add_argument("--dispatch", action="store_true", help="print op -> implementation "
                      "that backend='auto' runs here")
    info.add_argument("--capability", help="with --dispatch: for a GPU of this compute "
                      "capability instead (e.g. 9.0 Hopper, 10.0 Blackwell)")
    info.add_argument("--json", action="store_true", help="with --dispatch: as JSON "
                      "{op: implementation}")
    info.set_defaults(func=_info)

    demo = sub.add_parser("demo", help="the main job: train a small GPT three ways")
    demo.add_argument("--steps", type=int, help="training steps per configuration "
                      "(default: 200 on CPU, 1000 on GPU)")
    demo.add_argument("--budget", type=float, help="NVFP4 share of linear FLOPs for the "
                      "planned mix (default: the share of the default plan)")
    demo.add_argument("--out", default="lowprec-demo", help="directory for the PNG and "
                      "JSON (default: ./lowprec-demo)")
    demo.add_argument("--quick", action="store_true", help="a tiny model and a few steps "
                      "(tests; well under a minute)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument("--threads", type=int, help="CPU threads for torch (default 1: the "
                      "demo's matrices are tiny, and spinning threads stall on a busy "
                      "machine)")
    demo.add_argument("--ablation", action="store_true", help="run the recipe ablation "
                      "instead (BF16, recipe, no RHT, no SR, no 2-D, all layers NVFP4)")
    demo.add_argument("--seeds", type=int, default=2, help="seeds for --ablation "
                      "(default 2: --seed, --seed+1)")
    demo.add_argument("--quant-table", action="store_true", help="print the quantization "
                      "error table of each format instead (no training; seconds)")
    table = demo.add_argument_group("--quant-table options")
    table.add_argument("--m", type=int, default=512, help="tokens (rows of X)")
    table.add_argument("--k", type=int, default=1024, help="contraction dim (multiple of 16)")
    table.add_argument("--n", type=int, default=512, help="output features (rows of W)")
    table.add_argument("--backend", default="auto")
    demo.set_defaults(func=_demo)

    bench = sub.add_parser("bench", help="run the benchmarks of bench/ (GPU kernels; "
                           "without a GPU the CPU benchmarks, short settings)")
    bench.add_argument("--out", default="lowprec-bench", help="directory for the JSON "
                       "(default: ./lowprec-bench)")
    bench.add_argument("--bench-dir", help="the bench/ directory (default: the one beside "
                       "the lowprec package in a source checkout)")
    bench.set_defaults(func=_bench)

    plan = sub.add_parser("plan", help="the planner's plan for the demo model")
    plan.add_argument("--budget", type=float, default=0.75, help="NVFP4 share of linear "
                      "FLOPs (default 0.75)")
    plan.add_argument("--quick", action="store_true", help="the tiny demo model")
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument("--json", help="also write the plan as JSON to this file")
    plan.add_argument("--threads", type=int, help="CPU threads for torch (default 1, as "
                      "for the demo)")
    plan.set_defaults(func=_plan)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("steps", "seeds", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            build_parser().error(f"argument --{name}: must be >= 1; got {value}")
    try:
        return args.func(args)
    except (BudgetError, OptionError) as err:
        # A bad option or a budget out of reach is a usage error: one line, no traceback.
        print(f"lowprec {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `lowprec info | head`: the reader left; exit quietly as Unix tools do.
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
