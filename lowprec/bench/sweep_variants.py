"""Sweep every kernel variant: prove its bits, time the exact ones, keep the fastest.

Issue 21, item 3. For each op of ``lowprec.kernels.variants`` (quantize_row_col RNE and
SR, quantize_nvfp4 rowwise, quantize_weight_2d, amax, quantize_fp8, quantize_fp8_row_col)
and each backend
that runs here (triton; cuda with its ``_C.CUDA_VARIANTS``), every candidate runs on
random data (never zeros; a few special values: large outliers, bf16/fp16 subnormals,
-0.0 runs, an all-zero 16x16 block), and

1. its outputs are compared bit for bit with those of a proven implementation: the
   reference (``lowprec.reference``, on CPU) for problems of at most
   ``REFERENCE_ELEMENTS`` elements, else the same backend's baseline (which the GPU test
   phases prove against the reference). Any difference disqualifies the candidate, and it
   is not timed; a baseline that differs from the reference disqualifies the whole op;
2. the rest are timed (CUDA events, median of ``--reps`` over input sets rotated past
   L2) against a same-run device copy of the same bytes; the baseline is timed twice,
   first and last, and the two give the noise;
3. the winner per (op, backend, dtype) is the candidate with the least total time over
   the op's modes and shapes; a non-baseline candidate wins only when it beats the
   baseline by more than ``--margin`` and by more than the baseline's own spread.

The record (bench schema, ``bench/results/sweep_variants_*.json``) holds one row per
timed (op, mode, backend, variant, dtype, shape), plus ``disqualified``, ``winners``
and ``totals``; it is rewritten after each op, so a run cut short keeps what it did.
``--write-winners`` writes the winners into the committed winners file
(``kernels/winners.json``, or ``--winners-file``) and a copy to ``--winners-copy``.

    python -m lowprec.bench.sweep_variants [--ops quantize_row_col,amax] [--backends triton,cuda]
        [--shapes 8192x4096] [--dtypes bfloat16] [--reps 20] [--budget-s 150]
        [--write-winners] [--winners-copy DIR/winners.json]

``--smoke`` (or ``LOWPREC_BENCH_SMOKE=1``): the same flow on CPU under Triton's
interpreter at tiny shapes (wall clock, every candidate against the reference); it writes
no record and never the committed winners file (a ``--winners-copy`` is written, under
capability "0.0", to exercise that code).
"""

import itertools
import os
import sys
import time

if "--smoke" in sys.argv:        # before anything imports lowprec.bench.common or the kernels
    os.environ["LOWPREC_BENCH_SMOKE"] = "1"
    os.environ["TRITON_INTERPRET"] = "1"

import torch

from lowprec.bench import common

REFERENCE_ELEMENTS = 1 << 16          # check against the reference up to this size
OPS = ("quantize_row_col", "amax", "quantize_weight_2d", "quantize_nvfp4", "quantize_fp8",
       "quantize_fp8_row_col")
SMOKE_CAPABILITY = "0.0"              # the winners key of a smoke run (no GPU has it)
DTYPE_NAMES = {"bfloat16": torch.bfloat16, "float16": torch.float16,
               "float32": torch.float32}


# ----------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------

def sample(m, k, dtype, seed, device):
    """Random data over 12 binades with a few special values; never all zeros. Drawn on
    ``device`` (a GPU draws 8192x4096 in milliseconds; the CPU would take seconds)."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(m, k, generator=g, device=device) * torch.exp2(
        torch.randint(-6, 7, (m, k), generator=g, device=device).float())
    x[0, :min(k, 16)] = 0.0                               # a zero block (1x16)
    if m >= 16 and k >= 32:
        x[:16, 16:32] = 0.0                               # an all-zero 16x16 tile
    x[min(1, m - 1), ::7] *= 1000.0                       # outliers: the global amax
    x[min(2, m - 1), :] = -0.0                            # a row of -0.0
    tiny = torch.finfo(dtype).tiny
    x[min(3, m - 1), ::3] = tiny / 4 if dtype != torch.float16 else 3e-7   # subnormals
    x[m // 2, ::5] = -x[m // 2, ::5]
    return x.to(dtype)


def pad_rows16(x):
    m = x.shape[0]
    return torch.cat([x, x.new_zeros(-m % 16, x.shape[1])]) if m % 16 else x


# ----------------------------------------------------------------------------------
# Ops: modes (how each is called), bytes moved, the reference
# ----------------------------------------------------------------------------------

def shape_for(op, m, k):
    """The problem an op gets for ``--shapes MxK``: 2-D weights need N % 16 == 0."""
    if op == "quantize_weight_2d":
        return max(16, m - m % 16), k
    return m, k


def modes(op, m, k, given):
    """{mode: kwargs(x)} of ``op``; ``given(x)`` is the baseline's (row, col) amaxes."""
    from lowprec import reference as R
    signs = R.DEFAULT_SIGN_VECTOR
    col_offset = R.counters_used(m * k)
    if op == "quantize_row_col":
        return {
            "rne": lambda x: dict(rht_signs=signs, row_amax=given(x)[0], col_amax=given(x)[1]),
            "sr": lambda x: dict(rht_signs=signs, row_stochastic=True, col_stochastic=True,
                                 seed=1, row_offset=0, col_offset=col_offset,
                                 row_amax=given(x)[0], col_amax=given(x)[1]),
        }
    if op == "quantize_nvfp4":
        return {"rowwise rne": lambda x: dict(amax=given(x)[0])}
    if op == "quantize_weight_2d":
        return {"rne": lambda x: dict(columnwise=True, amax=given(x)[0])}
    if op == "amax":
        return {"rht": lambda x: dict(rht_signs=signs)}
    if op == "quantize_fp8":
        return {"rowwise": lambda x: {}}
    if op == "quantize_fp8_row_col":
        return {"both layouts": lambda x: {}}
    raise ValueError(f"unknown op {op!r}")


def nbytes(op, m, k, element_size):
    """Compulsory bytes: each input read once, each output written once."""
    read = element_size * m * k
    if op == "quantize_row_col":
        return read + (m * k + k * (-(-m // 16) * 16)) * 9 // 16
    if op == "quantize_nvfp4":
        return read + m * k * 9 // 16
    if op == "quantize_weight_2d":
        return read + 2 * m * k * 9 // 16
    if op == "amax":
        return read
    if op == "quantize_fp8_row_col":                       # two e4m3 copies + fp32 scales
        return read + 2 * m * k + 4 * (m + k)
    return read + m * k + 4 * m                            # quantize_fp8: e4m3 + fp32/row


def reference(op, x, kwargs):
    """What ``op`` must return for ``x`` (on CPU), by ``lowprec.reference``."""
    from lowprec import reference as R
    x = x.cpu()
    kw = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
    if op == "quantize_row_col":
        return R.quantize_row_col(x, **kw)
    if op == "quantize_nvfp4":
        return R.quantize_nvfp4(x, **kw)
    if op == "quantize_weight_2d":
        return R.quantize_weight_2d(x, **kw)
    if op == "amax":
        col = R.rht(pad_rows16(x).t().contiguous(), kw["rht_signs"])
        return torch.stack([R.tensor_amax(x), R.tensor_amax(col.to(torch.float32))])
    if op == "quantize_fp8":
        return R.quantize_fp8_rowwise(x)
    if op == "quantize_fp8_row_col":
        return R.quantize_fp8_row_col(x)
    raise ValueError(f"unknown op {op!r}")


def canonical(op, out):
    """The raw amax pair with Inf/NaN made the canonical NaN (what its consumers read:
    the raw bits of a non-finite amax are not part of its contract)."""
    if op != "amax":
        return out
    out = out.float()
    return torch.where(torch.isfinite(out), out, torch.full_like(out, float("nan")))


# ----------------------------------------------------------------------------------
# Bits
# ----------------------------------------------------------------------------------

def _flat(out):
    if out is None:
        return [None]
    if torch.is_tensor(out):
        return [out]
    return [t for part in out for t in _flat(part)]


def _bits(t):
    t = t.detach().cpu().contiguous()
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.view(view)


def difference(got, want):
    """None when ``got`` and ``want`` (tensors or nested tuples) are equal bit for bit,
    else a sentence saying where they first differ."""
    got, want = _flat(got), _flat(want)
    if len(got) != len(want):
        return f"{len(got)} outputs, expected {len(want)}"
    for i, (a, b) in enumerate(zip(got, want)):
        if (a is None) != (b is None):
            return f"output {i}: {'None' if a is None else 'a tensor'}, expected the other"
        if a is None:
            continue
        if a.shape != b.shape or a.element_size() != b.element_size():
            return f"output {i}: shape {tuple(a.shape)} {a.dtype}, expected " \
                   f"{tuple(b.shape)} {b.dtype}"
        ab, bb = _bits(a), _bits(b)
        if not torch.equal(ab, bb):
            diff = (ab != bb).nonzero()
            first = tuple(diff[0].tolist())
            return (f"output {i}: {len(diff)} of {ab.numel()} entries differ, first at "
                    f"{first}: {ab[first].item():#x} vs {bb[first].item():#x}")
    return None


# ----------------------------------------------------------------------------------
# One op on one backend
# ----------------------------------------------------------------------------------

def sweep(op, backend, candidates, shapes, dtype, reps, margin=0.02, seed=0):
    """Check and time every candidate of ``op`` on ``backend`` for ``dtype``.

    ``candidates``: {name: callable}, baseline first. Returns ``(rows, disqualified,
    winner, totals)``: bench rows of the timed candidates, [{variant, mode, shape,
    reason}] of the others, the winning name (None when the baseline itself failed) and
    {name: total ms} over every mode and shape (candidates timed on all of them).
    """
    names = list(candidates)
    base = names[0]
    rows, disqualified, out_of = [], [], set()
    totals = {name: 0.0 for name in names}
    spread = 0.0
    seeds = itertools.count(seed)
    for m0, k0 in shapes:
        m, k = shape_for(op, m0, k0)
        shape = f"{m}x{k}"
        size = nbytes(op, m, k, torch.empty((), dtype=dtype).element_size())
        sets = common.input_sets(
            lambda: sample(m, k, dtype, next(seeds), common.DEVICE), size)
        amaxes = {}

        def given(x):
            if id(x) not in amaxes:     # the baseline's amaxes, measured once per set
                from lowprec import reference as R
                if op in ("quantize_row_col", "quantize_nvfp4", "quantize_weight_2d"):
                    pair = candidates_amax(x, R.DEFAULT_SIGN_VECTOR)
                    amaxes[id(x)] = (pair[0].clone(), pair[1].clone())
                else:
                    amaxes[id(x)] = (None, None)
            return amaxes[id(x)]
        calls = modes(op, m, k, given)
        use_reference = m * k <= REFERENCE_ELEMENTS
        copy_ms = common.copy_reference(size, reps=reps)[0]
        for mode, kwargs in calls.items():
            x = sets[0]
            want = None
            for name in names:
                if name in out_of:
                    continue
                fn = candidates[name]
                try:
                    got = canonical(op, fn(x, **kwargs(x)))
                    if use_reference:
                        if want is None:
                            want = canonical(op, reference(op, x, kwargs(x)))
                        reason = difference(got, want)
                        against = "the reference"
                    elif name == base:
                        want, reason, against = got, None, None
                    else:
                        reason, against = difference(got, want), f"the {backend} baseline"
                except Exception as err:      # a variant that fails is out, not the sweep
                    reason, against = f"{type(err).__name__}: {err}", "running it"
                if reason is not None:
                    out_of.add(name)
                    disqualified.append(dict(op=op, backend=backend, variant=name,
                                             mode=mode, shape=shape, dtype=str(dtype),
                                             reason=f"differs from {against}: {reason}"
                                             if against != "running it" else reason))
                    print(f"  DISQUALIFIED {op} {mode} {backend}:{name} {shape}: "
                          f"{disqualified[-1]['reason']}")
                    if name == base:
                        return rows, disqualified, None, {}
            timed = {}
            for name in names + [base]:       # the baseline twice: first and last
                if name in out_of:
                    continue
                ms = common.median_ms(lambda x: candidates[name](x, **kwargs(x)), sets,
                                      reps=reps)
                if name in timed:
                    spread = max(spread, abs(ms - timed[name]) / min(ms, timed[name]))
                    ms = min(ms, timed[name])
                timed[name] = ms
            for name, ms in timed.items():
                totals[name] += ms
                rows.append(common.bandwidth_row(
                    f"{op} {mode}", f"{backend}:{name}", shape, ms, size, copy_ms, op=op,
                    backend=backend, variant=name, mode=mode, dtype=str(dtype).split(".")[-1],
                    M=m, K=k, of_variant_baseline=timed[base] / ms))
    totals = {name: t for name, t in totals.items() if name not in out_of}
    return rows, disqualified, pick(totals, base, margin, spread), totals


def candidates_amax(x, signs):
    """The triton baseline's (row, col) amaxes of ``x`` (what the timed calls are given)."""
    from lowprec.kernels import variants
    return variants.candidate("amax", "triton", variants.BASELINE)(x, signs)


def pick(totals, base, margin=0.02, spread=0.0):
    """The name with the least total time; the baseline unless another beats it by more
    than ``margin`` and more than the measured ``spread`` (noise)."""
    if base not in totals:
        return None
    best = min(totals, key=totals.get)
    if best != base and totals[base] / totals[best] - 1 > max(margin, spread):
        return best
    return base


# ----------------------------------------------------------------------------------
# Winners file
# ----------------------------------------------------------------------------------

def read_winners_record(path):
    """The winners file at ``path`` as a dict; a fresh one (no winners, no runs) with the
    committed file's header when ``path`` is None or does not exist."""
    import json
    from lowprec.kernels import variants
    try:
        if path is None:
            raise FileNotFoundError
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        with open(variants.WINNERS_PATH) as f:
            record = json.load(f)
        record["winners"], record["runs"] = {}, []
    if record.get("format") != variants.WINNERS_FORMAT:
        raise ValueError(f"{path}: not a {variants.WINNERS_FORMAT} file")
    return record


def update_winners(path, winners, run, record=None):
    """Write ``record`` (default: the file at ``path`` as it is) with ``winners`` ({op:
    {backend: {cap: {dtype: name}}}}) merged in and ``run`` appended to its ``runs``;
    validated (``variants.check_winners``) before anything is written."""
    import copy
    import json
    from lowprec.kernels import variants
    record = copy.deepcopy(record if record is not None else read_winners_record(path))
    merged = record.setdefault("winners", {})
    for op, per_backend in winners.items():
        for backend, per_cap in per_backend.items():
            for cap, per_dtype in per_cap.items():
                merged.setdefault(op, {}).setdefault(backend, {}).setdefault(
                    cap, {}).update(per_dtype)
    variants.check_winners(merged)
    record.setdefault("runs", []).append(run)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------

def parse_args(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--backends", default="triton,cuda")
    parser.add_argument("--shapes", default="8192x4096")
    parser.add_argument("--dtypes", default="bfloat16")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--margin", type=float, default=0.02,
                        help="least speed-up over the baseline for a variant to win")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no op after this many seconds (the rest: skipped)")
    parser.add_argument("--write-winners", action="store_true")
    parser.add_argument("--winners-file", default=None,
                        help="default: the committed kernels/winners.json")
    parser.add_argument("--winners-copy", default=None)
    parser.add_argument("--smoke", action="store_true", help="CPU, interpreter, tiny")
    return parser.parse_args(argv)


def backend_ready(backend):
    if backend == "triton":
        from lowprec.kernels import backend as module
        reason = module.availability(common.DEVICE)
        return reason is None, reason
    module, reason = common.backend_module(backend)
    return module is not None, reason


def winner_targets(args, variants):
    """[(path, the record it starts from)] of the winners files this run writes:
    ``--winners-file`` (default: the committed file; never in a smoke run) and
    ``--winners-copy``, which gets the same content (in a smoke run: the committed
    file's header with this run's winners alone)."""
    if not args.write_winners:
        return []
    target = args.winners_file or variants.WINNERS_PATH
    if common.SMOKE and os.path.abspath(target) == os.path.abspath(variants.WINNERS_PATH):
        print("smoke run: the committed winners file is not written")
        return [(args.winners_copy, read_winners_record(None))] if args.winners_copy else []
    base = read_winners_record(target)
    return [(target, base)] + ([(args.winners_copy, base)] if args.winners_copy else [])


def main(argv=None):
    args = parse_args(argv)
    common.exit_without_gpu("sweep_variants")
    from lowprec.kernels import variants
    start = time.time()
    if common.SMOKE:
        capability = SMOKE_CAPABILITY
    else:
        capability = variants.capability_key(torch.cuda.get_device_capability())
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    dtypes = [DTYPE_NAMES[d] for d in args.dtypes.split(",")]
    path = None
    if not common.SMOKE:
        import datetime
        gpu = torch.cuda.get_device_name().replace(" ", "_")
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(common.RESULTS, f"sweep_variants_{gpu}_{stamp}.json")
    rows, disqualified, skipped, totals_all = [], [], [], {}
    winners = {}
    targets = winner_targets(args, variants)     # [(path, record as it was)]
    run = dict(time_utc=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
               capability=capability, record=os.path.basename(path) if path else None,
               device=None if common.SMOKE else torch.cuda.get_device_name(),
               ops=args.ops, shapes=args.shapes, dtypes=args.dtypes)
    wrote = "nothing (smoke run on CPU: not a measurement)"
    for op in args.ops.split(","):
        for backend in args.backends.split(","):
            if op == "amax" and backend != "triton":
                continue                        # the CUDA amax runs inside its quantizers
            ready, reason = backend_ready(backend)
            if not ready:
                print(f"skipping {op} on {backend}: {reason}")
                continue
            if args.budget_s is not None and time.time() - start > args.budget_s:
                skipped.append(f"{op} {backend}")
                print(f"skipping {op} on {backend}: the {args.budget_s:.0f} s budget is spent")
                continue
            try:
                cands = variants.candidates(op, backend)
            except ValueError as err:            # e.g. no quantize_fp8 in the cuda backend
                print(f"skipping {op} on {backend}: {err}")
                continue
            for dtype in dtypes:
                t0 = time.time()
                got_rows, dq, winner, totals = sweep(op, backend, cands, shapes, dtype,
                                                     args.reps, args.margin)
                rows += got_rows
                disqualified += dq
                dname = str(dtype).split(".")[-1]
                totals_all.setdefault(op, {}).setdefault(backend, {})[dname] = totals
                if winner is not None:
                    winners.setdefault(op, {}).setdefault(backend, {}).setdefault(
                        capability, {})[dname] = winner
                print(f"{op} {backend} {dname}: winner {winner} of {len(cands)} "
                      f"({len(dq)} disqualified, {time.time() - t0:.1f} s)", flush=True)
        # After each op: a run cut short keeps what it measured and decided.
        if path is not None:
            wrote = common.write_results("sweep_variants", rows, dict(
                capability=capability, disqualified=disqualified, winners=winners,
                totals=totals_all, skipped=skipped, margin=args.margin), path=path)
        for target, before in targets:
            update_winners(target, winners, run, before)
    common.print_table(rows, [("impl", "variant", "s"), ("name", "op", "s"),
                              ("shape", "shape", "s"), ("dtype", "dtype", "s"),
                              *common.BANDWIDTH_COLUMNS,
                              ("of_variant_baseline", "vs baseline", ".2f")])
    for d in disqualified:
        print(f"disqualified: {d['op']} {d['backend']}:{d['variant']} ({d['mode']}, "
              f"{d['shape']}): {d['reason']}")
    print("winners:", winners or "none")
    for target, _ in targets:
        print("winners written to", target)
    print("wrote", wrote)


if __name__ == "__main__":
    main()
