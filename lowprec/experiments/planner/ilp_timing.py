"""Time the precision ILP on 500 layers (target: <= 1 s per solve).

Instances: a transformer of 125 blocks x 4 linears (qkv, attn proj, mlp fc, mlp proj;
d_model 4096, 4x MLP, 8192 tokens), two GEMM groups per layer (fprop+dgrad, wgrad), so
1000 choices over 3 precisions. Divergences are log-normal (a spread of ~100x between
layers, as measured LDs show), FP8 a random 3-30% of NVFP4. Timed: ``ilp.solve`` end to
end (pruning, PuLP model build, HiGHS, exact budget check), wall clock.

    python -m lowprec.experiments.planner.ilp_timing [--seeds 5] [--layers 500] [--json out.json]
"""

import argparse
import json
import random
import statistics
import sys
import time

from lowprec.planner import ilp, pulp_compat
from lowprec.planner.cost import gemm_flops

SHAPES = {"qkv": (3 * 4096, 4096), "proj": (4096, 4096), "fc": (4 * 4096, 4096),
          "fc_proj": (4096, 4 * 4096)}
TOKENS = 8192


def instance(n_layers, seed):
    rng = random.Random(seed)
    kinds = list(SHAPES)
    choices = []
    for i in range(n_layers):
        kind = kinds[i % len(kinds)]
        n, k = SHAPES[kind]
        for group, gemms in (("fprop+dgrad", 2), ("wgrad", 1)):
            nvfp4 = rng.lognormvariate(0.0, 1.2)
            cost = {"nvfp4": nvfp4, "fp8": nvfp4 * rng.uniform(0.03, 0.3), "bf16": 0.0}
            choices.append(ilp.Choice(f"blocks.{i // 4}.{kind}", group,
                                      gemms * gemm_flops(TOKENS, n, k), cost))
    return choices


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", help="write the timings here")
    args = parser.parse_args(argv)
    rows = []
    for kind, budget in (("nvfp4_fraction", 0.5), ("nvfp4_fraction", 0.75),
                         ("nvfp4_fraction", 0.9), ("time", 0.5)):
        times = []
        for seed in range(args.seeds):
            choices = instance(args.layers, seed)
            start = time.perf_counter()
            sol = ilp.solve(choices, budget=budget, budget_kind=kind)
            times.append(time.perf_counter() - start)
            assert sol.status == "optimal", sol.status
        rows.append({"budget_kind": kind, "budget": budget, "layers": args.layers,
                     "choices": 2 * args.layers, "median_s": statistics.median(times),
                     "max_s": max(times), "runs": len(times)})
        print(f"{kind:15s} budget {budget:<5} {args.layers} layers: median "
              f"{rows[-1]['median_s']:.3f} s, max {rows[-1]['max_s']:.3f} s "
              f"({len(times)} seeds, {sol.solver}, PuLP {pulp_compat.PULP_VERSION})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version.split()[0], "pulp": pulp_compat.PULP_VERSION,
                       "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
