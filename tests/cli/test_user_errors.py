"""User errors: one line on stderr, exit code 2, no traceback, and no work done first.

"No work" is visible on stdout: the demo and the plan print their header before they
build a model, so an empty stdout means the error came before any of it. Mutation
tried: dropping the budget check in ``lowprec.cli.demo.run`` makes the demo print its
header and start training, and ``test_one_line_and_exit_2[demo --budget 2]`` fails.
"""

import subprocess
import sys

import pytest
import torch

from lowprec import cli

CASES = {
    "demo --quant-table --k 1000": "--k must be a multiple of 16",
    "demo --quant-table --k 0": "--k must be >= 1; got 0",
    "demo --quant-table --backend bogus": "unknown backend 'bogus'",
    "demo --quant-table --backend cuda": "backend 'cuda' cannot run on cpu here",
    "demo --budget 2": "budget=2.0 is out of range",
    "demo --budget nan": "budget must be a finite number; got nan",
    "plan --budget -1": "budget=-1.0 is out of range",
    "plan --budget 0.5 --threads 0": "argument --threads: must be >= 1; got 0",
    "demo --steps 0": "argument --steps: must be >= 1; got 0",
    "demo --steps many": "argument --steps: invalid int value: 'many'",
    "plan --budgit 0.5": "unrecognized arguments: --budgit 0.5",
}


def _run(argv):
    try:
        return cli.main(argv)
    except SystemExit as exit_:          # argparse's usage errors
        return exit_.code


@pytest.mark.parametrize("command", sorted(CASES))
def test_one_line_and_exit_2(command, capsys):
    if "--backend cuda" in command and torch.cuda.is_available():
        pytest.skip("cuda runs here")
    status = _run(command.split())
    out, err = capsys.readouterr()
    assert status == 2, (command, out, err)
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert CASES[command] in err and "Traceback" not in err


def test_the_installed_command_too():
    """The same through ``python -m lowprec`` (the entry point's exit code)."""
    done = subprocess.run([sys.executable, "-m", "lowprec", "plan", "--budget", "-1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == ("lowprec plan: error: budget=-1.0 is out of range: an NVFP4 "
                           "FLOPs fraction must be in [0, 1]\n")
