"""The few PuLP calls the ILP needs, working on PuLP 2.8+, 3.x and 4.x.

What changed in PuLP 4.0 (its migration guide, "How to migrate from PuLP 3.x to 4.0"),
and how this module bridges it:

- Variables belong to a problem: ``prob.add_variable(name, lowBound, upBound, cat)``
  (also present in 3.3.1+); ``LpVariable(...)`` raises ``TypeError`` in 4.x. We use
  ``add_variable`` when the problem has it, else ``LpVariable``.
- ``prob.solve()`` returns an ``LpSolveStats`` (``.status`` an ``LpSolveStatus`` IntEnum
  keeping the old numbers, ``.has_solution``) instead of an int; ``prob.status`` and
  ``prob.sol_status`` are gone. 3.x reports a time-limited incumbent as status 1
  ("Optimal") with ``sol_status`` 2 (``LpSolutionIntegerFeasible``); 4.x reports it as
  ``TimeLimit`` (-4) with ``has_solution`` true. ``run`` maps both to one outcome.
- CBC is no longer bundled: ``PULP_CBC_CMD`` is gone; ``COIN_CMD`` finds a ``cbc`` on the
  PATH (``pip install pulp[cbc]``). We try ``PULP_CBC_CMD`` where it exists, else
  ``COIN_CMD``.
- HiGHS through ``highspy`` is ``pulp.HiGHS`` in both; ``pulp.HiGHS_CMD`` runs a
  ``highs`` executable.
"""

import contextlib
import os
import sys
import warnings
from dataclasses import dataclass

import pulp

PULP_VERSION = pulp.__version__
PULP_MAJOR = int(PULP_VERSION.split(".")[0])

# Status numbers shared by 3.x's LpStatus* constants and 4.x's LpSolveStatus IntEnum.
STATUS_OPTIMAL = 1
STATUS_INFEASIBLE = -1
STATUS_UNBOUNDED = -2
# 3.x sol_status values (LpSolution* constants, removed in 4.x).
SOLUTION_OPTIMAL = 1
SOLUTION_FEASIBLE = 2

SOLVER_ORDER = ("highs", "highs_cmd", "cbc")


class NoSolverError(RuntimeError):
    """No MILP solver PuLP can drive is available here."""


@dataclass
class Outcome:
    """What a solve ended with, independent of the PuLP version.

    status: ``"optimal"``, ``"feasible"`` (a solution, optimality not proven: time or
    other limit), ``"infeasible"``, ``"unbounded"`` or ``"no_solution"``.
    detail: the solver's own status name, for messages.
    """

    status: str
    detail: str
    seconds: float = 0.0


def new_problem(name):
    return pulp.LpProblem(name, pulp.LpMinimize)


def binary(prob, name):
    """A binary variable owned by ``prob`` (4.x) or free-standing (older PuLP)."""
    if hasattr(prob, "add_variable"):
        return prob.add_variable(name, 0, 1, pulp.LpBinary)
    return pulp.LpVariable(name, 0, 1, pulp.LpBinary)


def _candidates(name, time_limit, gap, msg):
    """``(label, factory)`` pairs for solver ``name``; factories may raise or be absent."""
    common = dict(msg=msg, timeLimit=time_limit, gapRel=gap)
    if name == "highs":
        # Presolve off: on this problem (one-hot rows plus one budget row) HiGHS's
        # presolve and restarts took ~75% of the time for 500 layers and never helped.
        return [("HiGHS (highspy)", lambda: pulp.HiGHS(presolve="off", **common))]
    if name == "highs_cmd":
        return [("HiGHS_CMD", lambda: pulp.HiGHS_CMD(**common))]
    if name == "cbc":
        found = []
        if hasattr(pulp, "PULP_CBC_CMD"):          # bundled CBC, PuLP < 4
            found.append(("PULP_CBC_CMD (bundled CBC)", lambda: pulp.PULP_CBC_CMD(**common)))
        found.append(("COIN_CMD (cbc on PATH)", lambda: pulp.COIN_CMD(**common)))
        return found
    raise ValueError(f"solver must be 'auto' or one of {SOLVER_ORDER}; got {name!r}")


def make_solver(name="auto", time_limit=None, gap=0.0, msg=False):
    """The first available solver: HiGHS (highspy), HiGHS_CMD, then CBC.

    Returns:
        ``(solver, label)``.
    Raises:
        NoSolverError naming every solver tried and why it was not usable.
    """
    names = SOLVER_ORDER if name == "auto" else (name,)
    tried = []
    for each in names:
        for label, factory in _candidates(each, time_limit, gap, msg):
            try:
                with warnings.catch_warnings():
                    # 3.3's PULP_CBC_CMD warns that 4.0 removes it; we fall back to
                    # COIN_CMD there already.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    solver = factory()
                if solver.available():
                    return solver, label
                tried.append(f"{label}: not available")
            except Exception as err:   # a missing class or binary is a reason, not a crash
                tried.append(f"{label}: {type(err).__name__}: {err}")
    raise NoSolverError(
        f"no MILP solver usable by PuLP {PULP_VERSION} (tried: {'; '.join(tried)}). "
        f"Install highspy (`pip install highspy`) or CBC (`pip install pulp[cbc]`).")


def interpret(result, prob):
    """Map the return of ``prob.solve`` (int in <4, LpSolveStats in 4.x) to an Outcome."""
    if hasattr(result, "has_solution"):               # PuLP 4.x
        code = int(result.status)
        has_solution = bool(result.has_solution)
        detail = str(getattr(result, "status_str", code))
        seconds = float(getattr(result, "time", 0.0) or 0.0)
        optimal = code == STATUS_OPTIMAL and has_solution
    else:                                              # PuLP 2.x / 3.x
        code = int(prob.status)
        solution = int(getattr(prob, "sol_status", SOLUTION_OPTIMAL if code == 1 else 0))
        has_solution = solution in (SOLUTION_OPTIMAL, SOLUTION_FEASIBLE)
        detail = f"{pulp.LpStatus.get(code, code)} (sol_status {solution})"
        seconds = float(getattr(prob, "solutionTime", 0.0) or 0.0)
        optimal = code == STATUS_OPTIMAL and solution == SOLUTION_OPTIMAL
    if optimal:
        return Outcome("optimal", detail, seconds)
    if has_solution:
        return Outcome("feasible", detail, seconds)
    if code == STATUS_INFEASIBLE:
        return Outcome("infeasible", detail, seconds)
    if code == STATUS_UNBOUNDED:
        return Outcome("unbounded", detail, seconds)
    return Outcome("no_solution", detail, seconds)


@contextlib.contextmanager
def _quiet_stdout(enabled):
    """Silence file descriptor 1 (highspy prints a banner from C++ on first use)."""
    if not enabled:
        yield
        return
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):   # no real stdout: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def run(prob, solver):
    """Solve ``prob`` with ``solver``; an Outcome whatever the PuLP version."""
    with warnings.catch_warnings(), _quiet_stdout(not getattr(solver, "msg", False)):
        # PuLP 3.3 warns about APIs that 4.0 removes; we already use the new ones where
        # they exist, and the warnings would only reach the user as noise.
        warnings.simplefilter("ignore", DeprecationWarning)
        result = prob.solve(solver)
    return interpret(result, prob)


def value(var):
    """A binary variable's value rounded to 0/1 (solvers return 0.9999999 and the like)."""
    v = var.varValue
    return 0 if v is None else int(round(v))
