"""The record every benchmark script writes and ``lowprec bench`` reads.

``lowprec.bench.common.write_results`` is the only writer; ``lowprec.cli.bench.bench_rows``
reads the fields below by name. A record (one JSON file under bench/results/, or under
``$LOWPREC_BENCH_RESULTS``) holds:

    schema     SCHEMA, the version of this layout
    script     the script's name, e.g. "bench_amax"
    command    the command line; commit: git HEAD (None outside a checkout)
    time_utc   when it was written, "YYYYmmddTHHMMSSZ"
    python, torch, triton   versions (triton None when not importable)
    device     lowprec.device.facts(): the GPU, its clocks and power limit, ...
    rows       a list of rows (below)
    ...        anything else a script adds (e.g. the GEMM benchmark's "benchmark" and
               "results" that the planner's cost model reads)

A row is one measured thing, in ``ROW_FIELDS``:

    name          what was measured: an op, a kernel or a training mode
    impl          which implementation (a backend, a variant), or None
    shape         the problem size as text, e.g. "8192x4096" or "M8192 N4096 K4096"
    time_ms       the median time of one run in milliseconds
    throughput    a rate derived from time_ms, or None; unit: its unit ("TB/s",
                  "TFLOP/s", "tok/s") or None
    baseline      the same-run reference it is compared to ("copy", "bf16 torch.mm",
                  "bf16"), or None; of_baseline: baseline time / this time (1.0 = as
                  fast as the baseline), or None

A row may carry more keys (bytes moved, M/N/K, peak memory): kept in the file, not read
by the CLI.
"""

import numbers

SCHEMA = "lowprec-bench/1"
ROW_FIELDS = ("name", "impl", "shape", "time_ms", "throughput", "unit", "baseline",
              "of_baseline")
_TEXT = {"name": False, "impl": True, "shape": False, "unit": True, "baseline": True}
_NUMBER = {"time_ms": False, "throughput": True, "of_baseline": True}


def check_row(row):
    """``row`` if it has every field of ``ROW_FIELDS`` with the right type, else ValueError."""
    if not isinstance(row, dict):
        raise ValueError(f"a benchmark row must be a dict; got {row!r}")
    missing = [f for f in ROW_FIELDS if f not in row]
    if missing:
        raise ValueError(f"benchmark row {row!r} lacks {', '.join(missing)}")
    for field, optional in _TEXT.items():
        value = row[field]
        if not (isinstance(value, str) or (optional and value is None)):
            raise ValueError(f"benchmark row field {field} must be text; got {value!r}")
    for field, optional in _NUMBER.items():
        value = row[field]
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not (ok or (optional and value is None)):
            raise ValueError(f"benchmark row field {field} must be a number; got {value!r}")
    return row


def check_record(record, source):
    """The rows of a benchmark record (a dict from JSON); ValueError naming ``source``
    when it is not one."""
    schema = record.get("schema") if isinstance(record, dict) else None
    if schema != SCHEMA:
        raise ValueError(f"{source}: not a {SCHEMA} benchmark record (schema {schema!r})")
    rows = record.get("rows")
    if not isinstance(rows, list):
        raise ValueError(f"{source}: 'rows' must be a list; got {type(rows).__name__}")
    return [check_row(row) for row in rows]
