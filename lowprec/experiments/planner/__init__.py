"""The planner's validation on the demo GPT: ``sensitivity`` (the ground truth),
``analyze_sensitivity`` (do the statistics predict it?), ``compare_plans`` (plans at
equal budget) and ``ilp_timing``; experiments/planner/README.md gives the commands."""

from pathlib import Path

# Where the scripts read and write by default: experiments/planner/ of the current
# directory (the repository root), beside the README that reports the results.
RESULTS = Path("experiments", "planner")
