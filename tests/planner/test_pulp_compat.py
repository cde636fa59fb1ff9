"""The PuLP adapter, on the installed major, and its result mapping for 3.x and 4.x."""

import os
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pulp
import pytest

from lowprec.planner import pulp_compat

REPO = Path(__file__).resolve().parents[2]


def _tiny(prob_sense_ok=True):
    prob = pulp_compat.new_problem("t")
    x = pulp_compat.binary(prob, "x")
    y = pulp_compat.binary(prob, "y")
    prob += pulp.lpSum([2 * x, 3 * y])
    prob += pulp.lpSum([x, y]) >= (1 if prob_sense_ok else 3), "cover"
    return prob, x, y


def test_installed_major_solves_and_reads_values():
    solver, label = pulp_compat.make_solver("auto")
    prob, x, y = _tiny()
    outcome = pulp_compat.run(prob, solver)
    assert outcome.status == "optimal", outcome
    assert (pulp_compat.value(x), pulp_compat.value(y)) == (1, 0)
    assert label.startswith("HiGHS")          # highspy is a dependency


def test_installed_major_reports_infeasible():
    solver, _ = pulp_compat.make_solver("auto")
    prob, _, _ = _tiny(prob_sense_ok=False)
    assert pulp_compat.run(prob, solver).status == "infeasible"


def test_solver_names_are_checked():
    with pytest.raises(ValueError, match="solver must be"):
        pulp_compat.make_solver("gurobi-please")


def test_interpret_pulp4_stats_objects():
    S = SimpleNamespace
    cases = [(S(status=1, has_solution=True, status_str="Optimal", time=0.1), "optimal"),
             (S(status=-4, has_solution=True, status_str="TimeLimit", time=1), "feasible"),
             (S(status=-4, has_solution=False, status_str="TimeLimit", time=1), "no_solution"),
             (S(status=-1, has_solution=False, status_str="Infeasible", time=0), "infeasible"),
             (S(status=-2, has_solution=False, status_str="Unbounded", time=0), "unbounded")]
    for result, expected in cases:
        assert pulp_compat.interpret(result, prob=None).status == expected


@pytest.mark.skipif(pulp_compat.PULP_MAJOR >= 4, reason="3.x status attributes")
def test_interpret_pulp3_status_codes():
    S = SimpleNamespace
    cases = [(S(status=1, sol_status=1), "optimal"),
             (S(status=1, sol_status=2), "feasible"),      # incumbent at the time limit
             (S(status=-1, sol_status=-1), "infeasible"),
             (S(status=0, sol_status=0), "no_solution")]
    for prob, expected in cases:
        assert pulp_compat.interpret(prob.status, prob).status == expected


PULP4_SCRIPT = textwrap.dedent("""
    # Runs the ILP on another interpreter (with PuLP 4) without torch: a bare package
    # holding only the torch-free modules the ILP imports.
    import sys, types, importlib.util, pathlib, random
    src = pathlib.Path(sys.argv[1])
    for name in ("lowprec", "lowprec.planner"):
        mod = types.ModuleType(name); mod.__path__ = []; sys.modules[name] = mod
    for name, path in (("lowprec.names", src.parent / "names.py"),
                       *((f"lowprec.planner.{n}", src / f"{n}.py")
                         for n in ("pulp_compat", "budget", "cost", "ilp"))):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    import pulp
    from lowprec.planner import ilp, pulp_compat
    assert pulp_compat.PULP_MAJOR >= 4, pulp.__version__
    choices = [ilp.Choice(f"l{i}", "all", 1000 * (1 + i % 3),
                          {"nvfp4": 1.0 + i / 10, "fp8": 0.3, "bf16": 0.0}) for i in range(12)]
    sol = ilp.solve(choices, budget=0.5)
    assert sol.status == "optimal" and sol.nvfp4_fraction >= 0.5, sol
    timed = ilp.solve(choices, budget=0.6, budget_kind="time")
    assert timed.relative_time <= 0.6
    try:
        ilp.solve(choices[:1] + [ilp.Choice("f", "all", 10 ** 6, {"bf16": 0.0})], budget=0.5)
        raise SystemExit("expected BudgetError")
    except ilp.BudgetError as err:
        assert "reachable" in str(err)
    # Optimal against brute force on random instances.
    import itertools
    rng = random.Random(3)
    for trial in range(15):
        cs = [ilp.Choice(f"r{i}", "all", rng.choice((1, 2, 3)) * 64,
                         {"nvfp4": rng.random(), "fp8": rng.random() / 3, "bf16": 0.0})
              for i in range(rng.randint(1, 7))]
        budget = rng.randint(0, 16) / 16
        total = sum(c.flops for c in cs)
        best = min(sum(c.cost[p] for c, p in zip(cs, combo))
                   for combo in itertools.product(("nvfp4", "fp8", "bf16"), repeat=len(cs))
                   if 16 * sum(c.flops for c, p in zip(cs, combo) if p == "nvfp4")
                   >= budget * 16 * total)
        got = ilp.solve(cs, budget=budget).objective
        assert abs(got - best) <= 1e-6, (trial, got, best)
    prob = pulp_compat.new_problem("inf")
    x = pulp_compat.binary(prob, "x")
    prob += x
    prob += x >= 2, "impossible"
    solver, label = pulp_compat.make_solver()
    assert pulp_compat.run(prob, solver).status == "infeasible"
    print("ok", pulp.__version__, label, sol.solver, round(sol.seconds, 3))
""")


# CI sets LOWPREC_PULP4_PYTHON (.ci/pulp4_env.sh); there a missing one is a failure.
@pytest.mark.skipif(not os.environ.get("LOWPREC_PULP4_PYTHON") and not os.environ.get("CI"),
                    reason="runs in CI (CI=true, where .ci/pulp4_env.sh sets "
                           "LOWPREC_PULP4_PYTHON and a missing one fails) or locally with "
                           "LOWPREC_PULP4_PYTHON set to an interpreter with pulp>=4 and "
                           "highspy (.ci/pulp4_env.sh makes one)")
def test_adapter_on_pulp4_interpreter(tmp_path):
    assert os.environ.get("LOWPREC_PULP4_PYTHON"), "CI must set LOWPREC_PULP4_PYTHON"
    script = tmp_path / "pulp4_check.py"
    script.write_text(PULP4_SCRIPT)
    done = subprocess.run([os.environ["LOWPREC_PULP4_PYTHON"], str(script),
                           str(REPO / "lowprec" / "planner")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.startswith("ok 4."), done.stdout
