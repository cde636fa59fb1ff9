"""`lowprec demo`: train the small GPT three ways (high precision, the NVFP4 recipe, a
planned mix); with --quant-table the quantization error table, with --ablation the recipe
ablation."""

import subprocess
import sys
from pathlib import Path

import torch

import lowprec
from lowprec import _C, device, quant_report
from lowprec.cli.common import out_dir, threads_line
from lowprec.demo import ablation, report, train
from lowprec.planner import options


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


def backend_words(device_type):
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


def _write_outputs(out, stem, record, plot):
    """JSON always; the PNG (``plot(record, path)``) when matplotlib is there."""
    record = dict(record, device=device.facts(), lowprec=_provenance(),
                  command=" ".join(sys.argv))
    json_path = report.write_json(record, out / f"{stem}.json")
    png_path, why_not = plot(record, out / f"{stem}.png")
    print(f"\nwrote {json_path}")
    print(f"wrote {png_path}" if png_path else why_not)


def run(args):
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
          f"{backend_words(device_type)}")
    record = train.run_demo(preset, steps=args.steps, budget=args.budget, seed=args.seed,
                            progress=not args.no_progress, threads=args.threads,
                            log=lambda text: print(text, flush=True),
                            on_start=lambda used: print(threads_line(used), flush=True))
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
    _write_outputs(out_dir(args.out), "demo", record, lambda rec, path: report.plot_losses(
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
    _write_outputs(out_dir(args.out), "ablation", record,
                   lambda rec, path: ablation.plot(rec, path, title))
    return 0


def add_parser(sub):
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
    demo.set_defaults(func=run)
