"""Named kernel variants per op and backend, and the committed winners a kernel table runs.

Issue 21, items 2-3: every quantize kernel has named candidates that produce the same
bits, and one GPU run (``python -m lowprec.bench.sweep_variants``) proves each candidate's bits, times
the exact ones and writes the fastest per (op, backend, compute capability, input dtype)
into ``winners.json`` beside this file, committed with the results.

* **Candidates** (``names``, ``candidates``): for each op of ``VARIANT_OPS``
  (``quantize_row_col``, ``quantize_nvfp4``, ``quantize_weight_2d``, ``amax``,
  ``quantize_fp8``, ``quantize_fp8_row_col``) and backend, ``"baseline"`` (exactly
  today's function) plus
  - triton: the launch variants of ``launches.TRITON_LAUNCHES`` (another tile, more warps,
    or the persistent amax kernel), each a ``Launch`` (FP8: ``Fp8Launch``,
    ``Fp8RowColLaunch``) the launchers take as ``tile=``; a candidate is the Triton
    backend's own entry point with the names bound (``variant=``, ``amax_variant=``: one
    custom op per kernel, the variant an argument);
  - cuda: the names of ``lowprec.backends.extension.CUDA_VARIANTS[op]`` (name -> the
    ``variant`` int of the CUDA op), bound the same way.
  Each candidate is a callable with the backend op's signature (for ``amax``:
  ``amax(x, rht_signs=None)`` -> the raw fp32 ``[2]`` of ``kernels.amax.amax_row_col``).
* **Winners** (``winners``): ``{"winners": {op: {backend: {"9.0": {"bfloat16": name}}}}}``;
  a missing entry means baseline. The Triton quantizers measure their amax with the
  ``amax`` winner of the same (backend, capability, dtype).
* **Resolution** (``resolve``): ``lowprec.backends`` asks once per (op, backend,
  capability) when a ``KernelTable`` is built (and for ``backend="auto"``'s functions):
  the baseline function itself when every winner is baseline, else a one-line entry that
  picks the dtype's function from a dict. ``label`` is the suffix ``lowprec info
  --dispatch`` appends to the implementation name. An unknown op, backend, dtype or
  variant name in the winners file is a ``ValueError`` naming it.
"""

import argparse
import functools
import json
import os
import sys

import torch

from lowprec.backends import extension

from . import aot, fp8
from . import backend as triton_backend
from .amax import _amax_persistent_kernel, amax_row_col
from .config import quarter_signs
from .launches import (AMAX_LAUNCHES, BASELINE, FP8_LAUNCHES, FP8_ROW_COL_LAUNCHES,
                       TRITON_LAUNCHES, Fp8Launch)

HERE = os.path.dirname(os.path.abspath(__file__))
WINNERS_PATH = os.path.join(HERE, "winners.json")
WINNERS_FORMAT = "lowprec-variant-winners/1"
# Ops with named variants; any other op of lowprec.backends.OPS has its baseline only.
VARIANT_OPS = ("quantize_row_col", "quantize_nvfp4", "quantize_weight_2d", "amax",
               "quantize_fp8", "quantize_fp8_row_col")
BACKENDS = ("triton", "cuda")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Triton quantizers that measure an amax themselves when none is given.
USES_AMAX = ("quantize_row_col", "quantize_nvfp4", "quantize_weight_2d")


# ----------------------------------------------------------------------------------
# Candidates
# ----------------------------------------------------------------------------------

def cuda_variants(op):
    """{name: variant int} the CUDA extension offers for ``op`` ({} for an op without)."""
    return dict(extension.CUDA_VARIANTS.get(op, {}))


def names(op, backend):
    """The candidate names of ``op`` on ``backend``, baseline first."""
    if backend == "triton":
        extra = TRITON_LAUNCHES.get(op, {})
    elif backend == "cuda":
        extra = cuda_variants(op)
    else:
        extra = {}
    return (BASELINE,) + tuple(n for n in extra if n != BASELINE)


# The adapter whose entry points take the variant names (the cuda and cpu backends share
# the extension's; only CUDA tensors run its variants).
ADAPTERS = {"triton": triton_backend, "cuda": extension}


def _base_function(op, backend):
    """Today's function of ``op`` on ``backend`` (what the registry calls its baseline)."""
    if op == "amax":
        if backend != "triton":
            raise ValueError(f"no amax op on backend {backend!r}")
        return _triton_amax(None)
    if not hasattr(ADAPTERS.get(backend), op):
        raise ValueError(f"backend {backend!r} has no {op}")
    return getattr(ADAPTERS[backend], op)


def candidate(op, backend, name, amax=BASELINE, base=None):
    """The callable of variant ``name`` of ``op`` on ``backend`` (signature of the backend
    op); for the Triton quantizers, ``amax`` names the amax variant they measure with.
    ``base``: today's function, when the caller has it. ValueError for an unknown name."""
    known = names(op, backend)
    if name not in known:
        raise ValueError(f"unknown {backend} variant {name!r} of {op}; known: "
                         f"{', '.join(known)}")
    if backend == "triton" and op in USES_AMAX and amax not in names("amax", "triton"):
        raise ValueError(f"unknown triton variant {amax!r} of amax; known: "
                         f"{', '.join(names('amax', 'triton'))}")
    if name == BASELINE and (amax == BASELINE or backend != "triton" or op not in USES_AMAX):
        return base if base is not None else _base_function(op, backend)
    if backend == "cuda":
        return functools.partial(getattr(extension, op), variant=cuda_variants(op)[name])
    if op == "amax":
        return _triton_amax(AMAX_LAUNCHES[name])
    if op in USES_AMAX:
        return functools.partial(getattr(triton_backend, op), variant=name, amax_variant=amax)
    return functools.partial(getattr(triton_backend, op), variant=name)


def candidates(op, backend, amax=BASELINE):
    """{name: callable} of every candidate of ``op`` on ``backend``, baseline first."""
    return {name: candidate(op, backend, name, amax) for name in names(op, backend)}


def _triton_amax(launch):
    def amax(x, rht_signs=None):
        """(max|x|, max|RHT(x^T)|) raw fp32 [2] of a 2-D ``x`` (``rht_signs``: +-1)."""
        signs = None if rht_signs is None else quarter_signs(rht_signs, x.device)
        return amax_row_col(x, signs, tile=launch)
    return amax


# ----------------------------------------------------------------------------------
# Winners
# ----------------------------------------------------------------------------------

_WINNERS = None


def capability_key(capability):
    """(9, 0) -> "9.0"; None (CPU tensors) -> None."""
    return None if capability is None else f"{capability[0]}.{capability[1]}"


def load_winners(path=WINNERS_PATH):
    """The ``winners`` mapping of a winners file ({} when the file is absent)."""
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        return {}
    if record.get("format") != WINNERS_FORMAT:
        raise ValueError(f"{path}: not a {WINNERS_FORMAT} file (format "
                         f"{record.get('format')!r})")
    return record.get("winners", {})


def winners():
    """The committed winners (read once; ``set_winners`` replaces them)."""
    global _WINNERS
    if _WINNERS is None:
        _WINNERS = load_winners()
    return _WINNERS


def set_winners(mapping):
    """Replace the winners (None: read the file again); kernel tables made earlier keep
    what they resolved, so callers clear ``lowprec.backends._TABLES`` too."""
    global _WINNERS
    _WINNERS = mapping
    _RESOLVED.clear()


def _where(op, backend, cap, dtype):
    return f"{op} / {backend} / capability {cap} / {dtype} in {WINNERS_PATH}"


def check_winners(mapping):
    """ValueError naming the first entry of ``mapping`` that is not a known op, backend,
    capability, dtype or variant name; else ``mapping``."""
    for op, per_backend in mapping.items():
        if op not in VARIANT_OPS:
            raise ValueError(f"winners: unknown op {op!r} (ops with variants: "
                             f"{', '.join(VARIANT_OPS)}) in {WINNERS_PATH}")
        for backend, per_cap in per_backend.items():
            if backend not in BACKENDS:
                raise ValueError(f"winners: unknown backend {backend!r} for {op} in "
                                 f"{WINNERS_PATH}")
            for cap, per_dtype in per_cap.items():
                major, dot, minor = cap.partition(".")
                if not (major.isdigit() and dot and minor.isdigit()):
                    raise ValueError(f"winners: capability {cap!r} of {op} / {backend} "
                                     f"must look like 9.0, in {WINNERS_PATH}")
                for dtype, name in per_dtype.items():
                    if dtype not in DTYPES:
                        raise ValueError(f"winners: unknown dtype {dtype!r} at "
                                         f"{_where(op, backend, cap, dtype)}")
                    if name not in names(op, backend):
                        raise ValueError(f"winners: unknown variant {name!r} at "
                                         f"{_where(op, backend, cap, dtype)}; known: "
                                         f"{', '.join(names(op, backend))}")
    return mapping


def winners_for(op, backend, capability):
    """{dtype name: (variant, amax variant)} of the non-baseline choices of ``op`` on
    ``backend`` at ``capability`` (validated; ValueError naming a bad entry)."""
    cap = capability_key(capability)
    table = winners()
    if cap is None or op not in VARIANT_OPS:
        return {}
    mine = table.get(op, {}).get(backend, {}).get(cap, {})
    amaxes = (table.get("amax", {}).get(backend, {}).get(cap, {})
              if backend == "triton" and op in USES_AMAX else {})
    check_winners({op: {backend: {cap: mine}}})
    if amaxes:
        check_winners({"amax": {backend: {cap: amaxes}}})
    chosen = {}
    for dtype in list(mine) + [d for d in amaxes if d not in mine]:
        pair = (mine.get(dtype, BASELINE), amaxes.get(dtype, BASELINE))
        if pair != (BASELINE, BASELINE):
            chosen[dtype] = pair
    return chosen


def label(op, backend, capability):
    """The suffix the dispatch table appends to ``op``'s name: "" when everything is the
    baseline, else e.g. `` [variant bfloat16=t64x64w8, amax persistent]``."""
    chosen = winners_for(op, backend, capability)
    if not chosen:
        return ""
    parts = []
    for dtype, (name, amax) in chosen.items():
        text = f"{dtype}={name}"
        if amax != BASELINE:
            text += f" (amax {amax})"
        parts.append(text)
    return f" [variant {', '.join(parts)}]"


_RESOLVED = {}


def resolve(op, backend, capability, base):
    """The function to run for ``op`` on ``backend`` at ``capability``: ``base`` itself
    when every winner is the baseline, else an entry that dispatches on the input's dtype
    (a dict look-up) to the winners' callables. Resolved once per (op, backend,
    capability, base) until ``set_winners``."""
    key = (op, backend, capability_key(capability), id(base))
    found = _RESOLVED.get(key)
    if found is not None:
        return found[0]
    chosen = winners_for(op, backend, capability)
    if not chosen:
        function = base
    else:
        by_dtype = {DTYPES[dtype]: candidate(op, backend, name, amax, base)
                    for dtype, (name, amax) in chosen.items()}
        function = _by_dtype(by_dtype, base)
    _RESOLVED[key] = (function, base)     # base kept alive: its id stays unique
    return function


def _by_dtype(by_dtype, base):
    def entry(x, *args, **kwargs):
        return by_dtype.get(x.dtype, base)(x, *args, **kwargs)
    entry.by_dtype = by_dtype
    entry.base = base
    return entry


# ----------------------------------------------------------------------------------
# Offline compile facts (sm_90, no GPU): python -m lowprec.kernels.variants [--json]
# ----------------------------------------------------------------------------------

AOT_KERNELS = {
    "quantize_row_col": ["quantize_row_col row+col RHT RNE", "quantize_row_col row+col RHT SR",
                         "quantize_row_col row RNE"],
    "quantize_weight_2d": ["quantize_2d row+col"],
    "amax": ["amax row+col RHT"],
}
FP8_COLUMN = "fp8 _column_scale_kernel"
FP8_FUSED = "fp8 _quantize_fp8_row_col_kernel"
FP8_ROWWISE = "fp8 _quantize_fp8_kernel"


def fp8_spec(kernel, launch):
    """(kernel, signature, constexprs, num_warps, num_stages, elements per thread per
    loop step) of an FP8 kernel (``FP8_COLUMN``, ``FP8_FUSED`` or ``FP8_ROWWISE``; bf16
    in, unit stride along K) launched as ``launch`` (an ``Fp8Launch``)."""
    per_step = launch.block_r * launch.block_k // (32 * launch.num_warps)
    stages = launch.num_stages or 3
    if kernel == FP8_COLUMN:
        return (fp8._column_scale_kernel,
                dict(x_ptr="*i16", col_scale_ptr="*fp32", M="i32", K="i32", stride_m="i32"),
                dict(stride_k=1, X_KIND=1, BLOCK_M=launch.block_r, BLOCK_C=launch.block_k),
                launch.num_warps, stages, per_step)
    if kernel == FP8_FUSED:
        return (fp8._quantize_fp8_row_col_kernel,
                dict(x_ptr="*i16", row_data_ptr="*u8", row_scale_ptr="*fp32",
                     col_data_ptr="*u8", col_scale_ptr="*fp32", M="i32", K="i32",
                     stride_m="i32"),
                dict(stride_k=1, X_KIND=1, BLOCK_R=launch.block_r, BLOCK_K=launch.block_k),
                launch.num_warps, stages, per_step)
    if kernel == FP8_ROWWISE:
        return (fp8._quantize_fp8_kernel,
                dict(x_ptr="*i16", data_ptr="*u8", scale_ptr="*fp32", R="i32", K="i32",
                     stride_r="i32"),
                dict(stride_k=1, X_KIND=1, BLOCK_R=launch.block_r, BLOCK_K=launch.block_k),
                launch.num_warps, stages, per_step)
    raise ValueError(f"unknown FP8 kernel {kernel!r}")


# The GPU launches of kernels/fp8.py's baselines (row_col_blocks; quantize_fp8's 4 x 512).
FP8_BASE = {FP8_ROWWISE: Fp8Launch(4, 512, 4), FP8_COLUMN: Fp8Launch(512, 16, 8),
            FP8_FUSED: Fp8Launch(32, 128, 4)}


def _fp8_aot_specs():
    """The FP8 kernels' specs: each baseline, then each variant's changed kernels."""
    out = {f"{kernel} / {BASELINE}": fp8_spec(kernel, launch)
           for kernel, launch in FP8_BASE.items()}
    for name, launch in FP8_LAUNCHES.items():
        out[f"{FP8_ROWWISE} / {name}"] = fp8_spec(FP8_ROWWISE, launch)
    for name, pair in FP8_ROW_COL_LAUNCHES.items():
        if pair.column is not None:
            out[f"{FP8_COLUMN} / {name}"] = fp8_spec(FP8_COLUMN, pair.column)
        if pair.fused is not None:
            out[f"{FP8_FUSED} / {name}"] = fp8_spec(FP8_FUSED, pair.fused)
    return out


def aot_specs():
    """label -> (kernel, signature, constexprs, num_warps, num_stages, elements per thread)
    of every Triton variant (kernels/aot.py's specs with each variant's launch; the FP8
    kernels loop, so theirs is per loop step)."""
    specs = aot._specs()
    out = {}
    for op, keys in AOT_KERNELS.items():
        for key in keys:
            fn, sig, consts, _, _, _ = specs[key]
            out[f"{key} / {BASELINE}"] = specs[key]
            for name, launch in TRITON_LAUNCHES[op].items():
                kernel, signature = fn, sig
                if launch.programs_per_sm:
                    kernel = _amax_persistent_kernel
                    signature = dict(sig, tiles_k="i32", num_tiles="i32")
                out[f"{key} / {name}"] = (
                    kernel, signature, dict(consts, CHUNKS=launch.chunks, BLOCK_K=launch.block_k),
                    launch.num_warps, launch.num_stages or 3,
                    16 * launch.chunks * launch.block_k // (32 * launch.num_warps))
    out.update(_fp8_aot_specs())
    return out


def aot_facts():
    """{label: registers, spills (LOCAL + STACK), SASS main path, per element, 16-byte
    loads, cp.async} of every Triton variant compiled for sm_90."""
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "0")
    facts = {}
    for label_, (fn, sig, consts, warps, stages, per_thread) in aot_specs().items():
        compiled = aot.compile_for_hopper(fn, sig, consts, warps, stages,
                                          aligned_ints={"tiles_k", "num_tiles"})
        report = aot.report(compiled)
        facts[label_] = dict(regs=report["REG"], spill=report["LOCAL"] + report["STACK"],
                             shared=report["SHARED"], sass_main=report["sass_main"],
                             per_element=round(report["sass_main"] / per_thread, 1),
                             ld_v4=report["ld_v4"], cp_async="cp.async" in compiled.asm["ptx"])
    return facts


def main(argv=None):
    parser = argparse.ArgumentParser(description="sm_90 compile facts of every variant")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    facts = aot_facts()
    if args.json:
        print(json.dumps(facts))
        return
    print(f"{'kernel / variant (sm_90)':48s} {'regs':>4s} {'spill':>5s} {'SASS':>5s} "
          f"{'/elem':>6s} {'v4':>3s} {'cp.async':>8s}")
    for name, f in facts.items():
        print(f"{name:48s} {f['regs']:4d} {f['spill']:5d} {f['sass_main']:5d} "
              f"{f['per_element']:6.1f} {'y' if f['ld_v4'] else 'n':>3s} "
              f"{'y' if f['cp_async'] else 'n':>8s}")


if __name__ == "__main__":
    main()
