"""`lowprec plan`: the planner's plan for the demo model at a budget."""

import os
from pathlib import Path

import torch

import lowprec
from lowprec.cli.common import threads_line
from lowprec.demo import corpus as corpus_mod
from lowprec.demo import train
from lowprec.planner import options
from lowprec.planner.options import OptionError


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


def run(args):
    options.check_budget(args.budget)
    if args.json:
        check_output_file(args.json, "--json")
    preset = train.default_preset(args.quick)
    model_cfg, train_cfg = train.PRESETS[preset]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with train.cpu_threads(device, args.threads):
        print(threads_line(torch.get_num_threads()), flush=True)
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


def add_parser(sub):
    plan = sub.add_parser("plan", help="the planner's plan for the demo model")
    plan.add_argument("--budget", type=float, default=0.75, help="NVFP4 share of linear "
                      "FLOPs (default 0.75)")
    plan.add_argument("--quick", action="store_true", help="the tiny demo model")
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument("--json", help="also write the plan as JSON to this file")
    plan.add_argument("--threads", type=int, help="CPU threads for torch (default 1, as "
                      "for the demo)")
    plan.set_defaults(func=run)
