"""The lowprec command.

  lowprec demo      train a small GPT three ways: high precision (FP32 on a CPU, BF16
                    autocast on a GPU), the NVFP4 recipe and a planned mix (main job)
  lowprec demo --quant-table   the quantization error table of each format (seconds)
  lowprec demo --ablation      the recipe ablation (long)
  lowprec info      backends available here and why not, device facts, versions
  lowprec info --dispatch [--capability 9.0] [--json]   op -> implementation table
  lowprec bench     run the benchmarks of lowprec.bench and print one table (without a
                    GPU: its CPU benchmarks, with short settings)
  lowprec plan      print the planner's plan for the demo model at a budget
"""

import argparse
import os
import sys

from lowprec.cli import bench, demo, info, plan
from lowprec.planner.options import BudgetError, OptionError

SUBCOMMANDS = (info, demo, bench, plan)     # one module each: its arguments and its run


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(prog="lowprec", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for subcommand in SUBCOMMANDS:
        subcommand.add_parser(sub)
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
