"""Shared benchmark machinery: timing, same-run baselines and the one record format.

* ``timed_ms``: one run between two CUDA events (wall clock on CPU).
* ``median_ms``: warm up, then time each run with ``timed_ms`` and take the
  median; several input sets are rotated so that inputs smaller than L2 are not served
  from it.
* ``copy_reference``: a same-run ``torch`` device-to-device copy moving the same number of
  bytes (half read, half written), the ceiling every bandwidth figure is divided by.
* ``mm_reference``: a same-run bf16 ``torch.mm`` of the same shape, the GEMM ceiling.
* ``row`` and ``write_results``: the one record every script writes, JSON under
  ``RESULTS`` with the facts, the command and the commit; its fields are documented in
  lowprec/bench_schema.py, and ``lowprec bench`` reads them by name.

``RESULTS`` is ``$LOWPREC_BENCH_RESULTS`` when set (``lowprec bench`` sets it to its
``--out`` folder), else ``bench/results`` under the current directory: run from the
repository root, the checkout's ``bench/results/``.

Compulsory bytes are counted once: each input read once, each output written once.
Clocks are never locked or changed. Without a GPU the scripts say so and exit 0: a
figure that was not measured is never written down.

``LOWPREC_BENCH_SMOKE=1`` (with ``TRITON_INTERPRET=1``) runs a script's logic on CPU
tensors with a wall clock, to check the script itself; it writes nothing.
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from lowprec import bench_schema, device
from lowprec.table import format_table

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.environ.get("LOWPREC_BENCH_RESULTS") or os.path.join("bench", "results")

# Llama-3 linear layers as (name, out_features N, in_features K); M = tokens.
LLAMA3_LINEARS = {
    "8B": [("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096),
           ("down", 4096, 14336)],
    "70B": [("qkv", 10240, 8192), ("o", 8192, 8192), ("gate_up", 57344, 8192),
            ("down", 8192, 28672)],
}
TOKENS = 8192
SMOKE = os.environ.get("LOWPREC_BENCH_SMOKE") == "1"
DEVICE = "cpu" if SMOKE else "cuda"


def exit_without_gpu(script):
    """Print why nothing is measured and exit 0 on a machine without a CUDA GPU."""
    if not torch.cuda.is_available() and not SMOKE:
        print(f"{script}: no CUDA GPU visible; nothing measured, nothing written.")
        sys.exit(0)


def parse_quantize_args(script, default_shapes, description):
    """The arguments every quantize benchmark takes; exits 0 (saying why) without a GPU."""
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backends", default="triton")
    parser.add_argument("--shapes", default=",".join(default_shapes))
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    exit_without_gpu(script)
    return args


def backend_shapes(args, entry):
    """``(backend, fn, dims)`` for every shape of every requested backend whose
    ``entry(backend)`` gives a function; backends without one are reported and skipped."""
    for backend in args.backends.split(","):
        fn, reason = entry(backend)
        if fn is None:
            print(f"skipping {backend}: {reason}")
            continue
        for shape in args.shapes.split(","):
            yield backend, fn, tuple(int(v) for v in shape.split("x"))


def backend_module(name):
    """(module, None) for a usable lowprec backend on CUDA, else (None, reason)."""
    from lowprec import backends
    module, reason = backends._load(name)
    if module is not None:
        reason = module.availability(DEVICE)
    return (module, None) if reason is None else (None, reason)


def timed_ms(fn, cuda, clock=time.perf_counter):
    """``(milliseconds, fn())`` of one run: between two CUDA events when ``cuda`` (the
    GPU time of the work ``fn`` queues, waited for), else by ``clock`` (the wall clock;
    ``time.process_time`` for the CPU time of this process)."""
    if not cuda:
        start = clock()
        out = fn()
        return (clock() - start) * 1e3, out
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    out = fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end), out


def median_ms(fn, inputs, warmup=10, reps=50):
    """Median milliseconds of ``fn(inputs[i % len(inputs)])`` over ``reps`` timed runs."""
    if SMOKE:
        return timed_ms(lambda: fn(inputs[0]), cuda=False)[0]
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    torch.cuda.synchronize()
    return statistics.median(timed_ms(lambda: fn(inputs[i % len(inputs)]), cuda=True)[0]
                             for i in range(reps))


def input_sets(make, total_bytes_each, l2_bytes=None):
    """Enough independent input sets (each from ``make()``) to exceed twice the L2 cache."""
    if SMOKE:
        return [make()]
    l2 = l2_bytes or torch.cuda.get_device_properties(0).L2_cache_size
    count = max(1, min(8, -(-2 * l2 // max(total_bytes_each, 1))))
    return [make() for _ in range(count)]


def copy_reference(nbytes, reps=50):
    """(ms, TB/s) of a device copy moving ``nbytes`` in all (nbytes/2 read + written)."""
    half = nbytes // 2
    pairs = input_sets(lambda: (torch.empty(half, dtype=torch.uint8, device=DEVICE),
                                torch.empty(half, dtype=torch.uint8, device=DEVICE)), nbytes)
    ms = median_ms(lambda p: p[1].copy_(p[0]), pairs, reps=reps)
    return ms, 2 * half / ms / 1e9


def mm_reference(m, n, k, reps=30):
    """(ms, TFLOP/s) of a bf16 ``torch.mm`` [m, k] x [k, n] (random data, never zeros)."""
    sets = input_sets(lambda: (torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16),
                               torch.randn(n, k, device=DEVICE, dtype=torch.bfloat16)),
                      2 * (m + n) * k)
    ms = median_ms(lambda p: torch.mm(p[0], p[1].t()), sets, reps=reps)
    return ms, 2 * m * n * k / ms / 1e9


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:
        return None


def row(name, time_ms, *, impl=None, shape, throughput=None, unit=None, baseline=None,
        of_baseline=None, **extra):
    """One benchmark row (lowprec/bench_schema.py says what each field means)."""
    return bench_schema.check_row(dict(
        name=name, impl=impl, shape=shape, time_ms=time_ms, throughput=throughput,
        unit=unit, baseline=baseline, of_baseline=of_baseline, **extra))


def bandwidth_row(name, impl, shape, ms, nbytes, copy_ms, **extra):
    """The row of a memory-bound op: TB/s over its compulsory ``nbytes`` and the ratio to
    a same-run copy of as many bytes that took ``copy_ms``."""
    return row(name, ms, impl=impl, shape=shape, throughput=nbytes / ms / 1e9, unit="TB/s",
               baseline="copy", of_baseline=copy_ms / ms, bytes=nbytes,
               copy_tbps=nbytes / copy_ms / 1e9, **extra)


# print_table columns of bandwidth_row's figures.
BANDWIDTH_COLUMNS = [("time_ms", "ms", ".3f"), ("throughput", "TB/s", ".2f"),
                     ("of_baseline", "of copy", ".1%")]


def write_results(script, rows, extra=None, path=None):
    """Write a benchmark record (lowprec/bench_schema.py) of ``rows`` from ``row()`` with
    the device facts, to ``path`` or into ``RESULTS``; return the path written."""
    if SMOKE:
        return "nothing (smoke run on CPU: not a measurement)"
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    facts = device.facts()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if path is None:
        gpu = str((facts["gpu"] or {}).get("name") or "cpu").replace(" ", "_")
        path = os.path.join(RESULTS, f"{script}_{gpu}_{stamp}.json")
    record = {"schema": bench_schema.SCHEMA, "script": script, "command": " ".join(sys.argv),
              "commit": _commit(), "time_utc": stamp, "python": platform.python_version(),
              "torch": torch.__version__, "triton": triton_version, "device": facts,
              "rows": [bench_schema.check_row(r) for r in rows], **(extra or {})}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1, default=str)
    return path


def print_table(rows, columns):
    """Print ``rows`` (dicts) as a right-aligned table of (key, header, format) columns."""
    def cell(row, key, fmt):
        value = row.get(key)
        return "-" if value is None else format(value, fmt)
    print(format_table([header for _, header, _ in columns],
                       [[cell(row, key, fmt) for key, _, fmt in columns] for row in rows],
                       align="r"))
