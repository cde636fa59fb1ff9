"""Named kernel variants per op and backend, and the committed winners a kernel table runs.

Issue 21, items 2-3: every quantize kernel has named candidates that produce the same
bits, and one GPU run (``bench/sweep_variants.py``) proves each candidate's bits, times
the exact ones and writes the fastest per (op, backend, compute capability, input dtype)
into ``winners.json`` beside this file, committed with the results.

* **Candidates** (``names``, ``candidates``): for each op of ``VARIANT_OPS``
  (``quantize_row_col``, ``quantize_nvfp4``, ``quantize_weight_2d``, ``amax``,
  ``quantize_fp8``, ``quantize_fp8_row_col``) and backend, ``"baseline"`` (exactly
  today's function) plus
  - triton: the launch variants of ``TRITON_LAUNCHES`` (another tile, more warps, or the
    persistent amax kernel), each a ``Launch`` (FP8: ``Fp8Launch``, ``Fp8RowColLaunch``)
    the launchers take as ``tile=``;
  - cuda: the names of ``lowprec._C.CUDA_VARIANTS[op]`` (name -> the ``variant`` int of
    the CUDA op), when the extension's Python side defines it.
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

import functools
import json
import math
import os
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from lowprec.checks import as_int64

HERE = os.path.dirname(os.path.abspath(__file__))
WINNERS_PATH = os.path.join(HERE, "winners.json")
WINNERS_FORMAT = "lowprec-variant-winners/1"
BASELINE = "baseline"
# Ops with named variants; any other op of lowprec.backends.OPS has its baseline only.
VARIANT_OPS = ("quantize_row_col", "quantize_nvfp4", "quantize_weight_2d", "amax",
               "quantize_fp8", "quantize_fp8_row_col")
BACKENDS = ("triton", "cuda")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Triton quantizers that measure an amax themselves when none is given.
USES_AMAX = ("quantize_row_col", "quantize_nvfp4", "quantize_weight_2d")


class Launch(NamedTuple):
    """How a Triton variant launches: a tile of ``16 * chunks`` rows by ``block_k``
    columns, ``num_warps``, ``num_stages`` (None: Triton's default) and, for a persistent
    kernel, ``programs_per_sm`` (0: one program per tile)."""
    chunks: int
    block_k: int
    num_warps: int
    num_stages: Optional[int] = None
    programs_per_sm: int = 0

    def options(self):
        """The launch keywords (FP contraction off on the GPU, as every launcher)."""
        from .config import interpreting, launch_options
        options = dict(num_warps=self.num_warps, **launch_options())
        if self.num_stages is not None and not interpreting():
            options["num_stages"] = self.num_stages
        return options

    def programs(self, device):
        """Programs of a persistent grid: ``programs_per_sm`` per SM (the interpreter
        counts as one SM, so small tests walk several tiles per program)."""
        device = torch.device(device)
        sms = _sm_count(device.index or 0) if device.type == "cuda" else 1
        return max(1, sms * self.programs_per_sm)


class Fp8Launch(NamedTuple):
    """How an FP8 kernel of kernels/fp8.py launches: ``block_r`` rows by ``block_k``
    columns per program (``_quantize_fp8_kernel``: rows per program, K per step; the
    fused row/col kernel: the same), or for ``_column_scale_kernel`` ``block_r`` rows
    per step down M (its BLOCK_M) by ``block_k`` columns per program (its BLOCK_C);
    ``num_warps``, ``num_stages`` (None: Triton's default)."""
    block_r: int
    block_k: int
    num_warps: int
    num_stages: Optional[int] = None

    options = Launch.options


class Fp8RowColLaunch(NamedTuple):
    """The two launches of ``quantize_fp8_row_col``: the column-scale kernel's and the
    fused kernel's ``Fp8Launch`` (None: today's tile for that kernel)."""
    column: Optional[Fp8Launch] = None
    fused: Optional[Fp8Launch] = None


@functools.lru_cache(maxsize=None)
def _sm_count(index):
    return torch.cuda.get_device_properties(index).multi_processor_count


# The 1x16 kernel (quantize_row_col, also quantize_nvfp4's launcher) is limited by
# registers (145 per thread RNE, 197 SR at 16x256 over 4 warps: 2-3 CTAs per SM) and by
# its columnwise stores (one int64 per column per 16-row tile). The variants trade
# elements per thread for occupancy, or make each column's words contiguous (64 rows:
# 4 int64 = one 32-byte sector per column).
ROW_COL_LAUNCHES = {
    "t16x256w8": Launch(1, 256, 8),     # half the elements per thread: ~100 / 128 regs
    "t16x128w4": Launch(1, 128, 4),     # twice the CTAs, ~95 / 123 regs
    "t32x128w8": Launch(2, 128, 8),     # 16-byte column runs
    "t64x64w8": Launch(4, 64, 8),       # 32-byte column runs, ~121 / 128 regs
}
WEIGHT_2D_LAUNCHES = {
    "t16x256w8": Launch(1, 256, 8),
    "t16x128w4": Launch(1, 128, 4),
    "t32x128w8": Launch(2, 128, 8),
    "t64x64w8": Launch(4, 64, 8),
}
# The amax kernel is a pure read ending in two same-address atomics per 4096 elements;
# fewer, larger programs or a persistent grid cut those.
AMAX_LAUNCHES = {
    "t16x256w8": Launch(1, 256, 8),
    "t32x256w8": Launch(2, 256, 8),     # half the atomics
    # Persistent: programs_per_sm is what fits at once (sm_90 build: 104 registers x 256
    # threads -> 2 CTAs per SM; the 4-warp tile ~100 x 128 -> 4).
    "persistent": Launch(1, 256, 8, programs_per_sm=2),
    "persistent_t16x128w4": Launch(1, 128, 4, programs_per_sm=4),
}
# FP8 rowwise cast (baseline 4 x 512, 4 warps: R/4 programs, 16 elements per thread per
# step, two passes over K whose second read should come from L2). The variants change the
# rows in flight per program and the load run length along K.
FP8_LAUNCHES = {
    "r8x512w8": Fp8Launch(8, 512, 8),      # twice the rows per program, same per thread
    "r16x256w4": Fp8Launch(16, 256, 4),    # 32 per thread per step, R/16 programs
    "r2x1024w4": Fp8Launch(2, 1024, 4),    # 2 KiB row runs, twice the programs
}
# FP8 both layouts: _column_scale_kernel (baseline 512 x 16, 8 warps: only K/16
# programs, 64 at K = 1024) then the fused kernel (baseline 32 x 128, 4 warps). "c..."
# variants change the column pass only, "r..." the fused kernel only.
_BASE_COLUMN = Fp8Launch(512, 16, 8)
FP8_ROW_COL_LAUNCHES = {
    "c512x8w8": Fp8RowColLaunch(column=Fp8Launch(512, 8, 8)),     # K/8 programs, 16-B rows
    "c256x8w4": Fp8RowColLaunch(column=Fp8Launch(256, 8, 4)),     # K/8 smaller CTAs
    "c256x32w8": Fp8RowColLaunch(column=Fp8Launch(256, 32, 8)),   # 64-B rows, K/32 programs
    "c1024x16w8": Fp8RowColLaunch(column=Fp8Launch(1024, 16, 8)),  # 64 loads per thread
    # The fused baseline holds 32 elements per thread at 157 registers (sm_90 build: 3
    # CTAs, 12 warps per SM); 16 per thread halves that.
    "r32x128w8": Fp8RowColLaunch(fused=Fp8Launch(32, 128, 8)),    # 16 per thread
    "r64x64w8": Fp8RowColLaunch(fused=Fp8Launch(64, 64, 8)),      # 16, 64-B column runs
    "r64x128w8": Fp8RowColLaunch(fused=Fp8Launch(64, 128, 8)),    # 32, 64-B column runs
    "c512x8w8_r32x128w8": Fp8RowColLaunch(column=Fp8Launch(512, 8, 8),
                                          fused=Fp8Launch(32, 128, 8)),
}
TRITON_LAUNCHES = {
    "quantize_row_col": ROW_COL_LAUNCHES,
    "quantize_nvfp4": ROW_COL_LAUNCHES,
    "quantize_weight_2d": WEIGHT_2D_LAUNCHES,
    "amax": AMAX_LAUNCHES,
    "quantize_fp8": FP8_LAUNCHES,
    "quantize_fp8_row_col": FP8_ROW_COL_LAUNCHES,
}


# ----------------------------------------------------------------------------------
# Candidates
# ----------------------------------------------------------------------------------

def cuda_variants(op):
    """{name: variant int} the CUDA extension offers for ``op`` ({} before it has any)."""
    try:
        from lowprec import _C
    except Exception:
        return {}
    return dict(getattr(_C, "CUDA_VARIANTS", {}).get(op, {}))


def names(op, backend):
    """The candidate names of ``op`` on ``backend``, baseline first."""
    if backend == "triton":
        extra = TRITON_LAUNCHES.get(op, {})
    elif backend == "cuda":
        extra = cuda_variants(op)
    else:
        extra = {}
    return (BASELINE,) + tuple(n for n in extra if n != BASELINE)


def _base_function(op, backend):
    """Today's function of ``op`` on ``backend`` (what the registry calls its baseline)."""
    if op == "amax":
        if backend != "triton":
            raise ValueError(f"no amax op on backend {backend!r}")
        return _triton_amax(None)
    from lowprec import backends
    module = backends._load(backend)[0]
    if module is None or not hasattr(module, op):
        raise ValueError(f"backend {backend!r} has no {op}")
    return getattr(module, op)


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
        from lowprec import _C
        return functools.partial(getattr(_C, op), variant=cuda_variants(op)[name])
    if op == "amax":
        return _triton_amax(AMAX_LAUNCHES[name])
    return TRITON_ENTRIES[op](name, amax)


def candidates(op, backend, amax=BASELINE):
    """{name: callable} of every candidate of ``op`` on ``backend``, baseline first."""
    return {name: candidate(op, backend, name, amax) for name in names(op, backend)}


# ----------------------------------------------------------------------------------
# Triton entry points of the variants (torch.library custom ops, as kernels/backend.py's,
# with the variant names as arguments so that torch.compile traces through them)
# ----------------------------------------------------------------------------------

def _launches(op, variant, amax):
    tile = None if variant == BASELINE else TRITON_LAUNCHES[op][variant]
    amax_tile = None if amax == BASELINE else AMAX_LAUNCHES[amax]
    return tile, amax_tile


def _scalar_or_none(amax, device):
    if amax is None:
        return None
    return torch.as_tensor(amax, dtype=torch.float32, device=device).detach().reshape(())


def _triton_amax(launch):
    def amax(x, rht_signs=None):
        """(max|x|, max|RHT(x^T)|) raw fp32 [2] of a 2-D ``x`` (``rht_signs``: +-1)."""
        from .amax import amax_row_col
        from .config import quarter_signs
        signs = None if rht_signs is None else quarter_signs(rht_signs, x.device)
        return amax_row_col(x, signs, tile=launch)
    return amax


@torch.library.custom_op("lowprec::triton_variant_quantize_row_col", mutates_args=())
def _row_col_op(x: Tensor, variant: str, amax_variant: str, rht_signs: Optional[List[int]],
                rowwise: bool, columnwise: bool, row_stochastic: bool, col_stochastic: bool,
                seed: int, row_offset: int, col_offset: int, row_amax: Optional[Tensor],
                col_amax: Optional[Tensor], row_values: bool = False, col_values: bool = False
                ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    from lowprec.formats import absent_nvfp4
    from .quantize_row_col import quantize_row_col
    tile, amax_tile = _launches("quantize_row_col", variant, amax_variant)
    row, col = quantize_row_col(x, row=rowwise, col=columnwise, col_signs=rht_signs,
                                row_stochastic=row_stochastic, col_stochastic=col_stochastic,
                                seed=seed, row_offset=row_offset, col_offset=col_offset,
                                row_amax=row_amax, col_amax=col_amax, tile=tile,
                                amax_tile=amax_tile, row_values=row_values,
                                col_values=col_values)
    return (*(row or absent_nvfp4(x)), *(col or absent_nvfp4(x)))


@_row_col_op.register_fake
def _(x, variant, amax_variant, rht_signs, rowwise, columnwise, row_stochastic,
      col_stochastic, seed, row_offset, col_offset, row_amax, col_amax, row_values=False,
      col_values=False):
    from lowprec.formats import empty_row_col
    return empty_row_col(x, rowwise, columnwise, row_values=row_values,
                         col_values=col_values)


def _row_col_entry(variant, amax):
    def quantize_row_col(x, *, rht_signs=None, rowwise=True, columnwise=True,
                         row_stochastic=False, col_stochastic=False, seed=0, row_offset=0,
                         col_offset=0, row_amax=None, col_amax=None, row_values=False,
                         col_values=False):
        signs = None if rht_signs is None else [int(s) for s in rht_signs]
        out = torch.ops.lowprec.triton_variant_quantize_row_col(
            x.detach().reshape(math.prod(x.shape[:-1]), x.shape[-1]), variant, amax, signs,
            bool(rowwise), bool(columnwise), bool(row_stochastic), bool(col_stochastic),
            as_int64(seed), as_int64(row_offset), as_int64(col_offset),
            _scalar_or_none(row_amax, x.device), _scalar_or_none(col_amax, x.device),
            bool(row_values), bool(col_values))
        return (tuple(out[:3]) if rowwise else None), (tuple(out[3:]) if columnwise else None)
    quantize_row_col.variant = (variant, amax)
    return quantize_row_col


@torch.library.custom_op("lowprec::triton_variant_quantize_nvfp4", mutates_args=())
def _nvfp4_op(x: Tensor, variant: str, amax_variant: str, block: str,
              rht_signs: Optional[List[int]], stochastic: bool, seed: int, offset: int,
              amax: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    from .quantize_row_col import quantize_row_col
    from .quantize_2d import quantize_2d
    tile, amax_tile = _launches("quantize_nvfp4", variant, amax_variant)
    k = x.shape[-1]
    lead = x.shape[:-1]
    x2 = x.reshape(math.prod(lead), k)
    if block == "16x16":     # as kernels/backend.py's op, with the variant's launches
        if rht_signs is not None:
            raise ValueError("block='16x16' with rht_signs is not supported")
        (data, scale, amax_out), _ = quantize_2d(x2, columnwise=False, stochastic=stochastic,
                                                 seed=seed, offset=offset, amax=amax,
                                                 tile=tile, amax_tile=amax_tile)
    elif rht_signs is None:
        (data, scale, amax_out), _ = quantize_row_col(
            x2, row=True, row_stochastic=stochastic, seed=seed, row_offset=offset,
            row_amax=amax, tile=tile, amax_tile=amax_tile)
    else:
        _, (data, scale, amax_out) = quantize_row_col(
            x2.t(), row=False, col=True, col_signs=rht_signs, col_stochastic=stochastic,
            seed=seed, col_offset=offset, col_amax=amax, tile=tile, amax_tile=amax_tile)
    return data.reshape(*lead, k // 2), scale.reshape(*lead, k // 16), amax_out


@_nvfp4_op.register_fake
def _(x, variant, amax_variant, block, rht_signs, stochastic, seed, offset, amax):
    from lowprec.formats import empty_nvfp4
    return empty_nvfp4(x, x.shape[:-1], x.shape[-1])


def _nvfp4_entry(variant, amax_variant):
    def quantize_nvfp4(x, *, block="1x16", rht_signs=None, stochastic=False, seed=0,
                       offset=0, amax=None):
        signs = None if rht_signs is None else [int(s) for s in rht_signs]
        return torch.ops.lowprec.triton_variant_quantize_nvfp4(
            x.detach(), variant, amax_variant, block, signs, bool(stochastic),
            as_int64(seed), as_int64(offset), _scalar_or_none(amax, x.device))
    quantize_nvfp4.variant = (variant, amax_variant)
    return quantize_nvfp4


@torch.library.custom_op("lowprec::triton_variant_quantize_weight_2d", mutates_args=())
def _weight_2d_op(w: Tensor, variant: str, amax_variant: str, columnwise: bool,
                  stochastic: bool, seed: int, offset: int, amax: Optional[Tensor],
                  values: bool = False
                  ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    from lowprec.formats import absent_nvfp4
    from .quantize_2d import quantize_2d
    tile, amax_tile = _launches("quantize_weight_2d", variant, amax_variant)
    row, col = quantize_2d(w, columnwise=columnwise, stochastic=stochastic, seed=seed,
                           offset=offset, amax=amax, tile=tile, amax_tile=amax_tile,
                           values=values)
    return (*row, *(col or absent_nvfp4(w)))


@_weight_2d_op.register_fake
def _(w, variant, amax_variant, columnwise, stochastic, seed, offset, amax, values=False):
    from lowprec.formats import empty_weight_2d
    return empty_weight_2d(w, columnwise, values=values)


def _weight_2d_entry(variant, amax_variant):
    def quantize_weight_2d(w, *, columnwise=True, stochastic=False, seed=0, offset=0,
                           amax=None, values=False):
        if values and columnwise:
            raise ValueError("quantize_weight_2d(values=True) gives W's values only: pass "
                             "columnwise=False and use .t() for W^T (exactly its values)")
        out = torch.ops.lowprec.triton_variant_quantize_weight_2d(
            w.detach(), variant, amax_variant, bool(columnwise), bool(stochastic),
            as_int64(seed), as_int64(offset), _scalar_or_none(amax, w.device), bool(values))
        return tuple(out[:3]), (tuple(out[3:]) if columnwise else None)
    quantize_weight_2d.variant = (variant, amax_variant)
    return quantize_weight_2d


@torch.library.custom_op("lowprec::triton_variant_quantize_fp8", mutates_args=())
def _fp8_op(x: Tensor, variant: str) -> Tuple[Tensor, Tensor]:
    from .fp8 import quantize_fp8
    return quantize_fp8(x, tile=_launches("quantize_fp8", variant, BASELINE)[0])


@_fp8_op.register_fake
def _(x, variant):
    return (x.new_empty(x.shape, dtype=torch.float8_e4m3fn),
            x.new_empty(*x.shape[:-1], 1, dtype=torch.float32))


def _fp8_entry(variant, amax_variant):
    def quantize_fp8(x):
        return torch.ops.lowprec.triton_variant_quantize_fp8(x.detach(), variant)
    quantize_fp8.variant = (variant, amax_variant)
    return quantize_fp8


@torch.library.custom_op("lowprec::triton_variant_quantize_fp8_row_col", mutates_args=())
def _fp8_row_col_op(x: Tensor, variant: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    from .fp8 import quantize_fp8_row_col
    return quantize_fp8_row_col(
        x, tile=_launches("quantize_fp8_row_col", variant, BASELINE)[0])


@_fp8_row_col_op.register_fake
def _(x, variant):
    m, k = x.shape
    e4m3, f32 = torch.float8_e4m3fn, torch.float32
    return (x.new_empty(m, k, dtype=e4m3), x.new_empty(m, 1, dtype=f32),
            x.new_empty(k, m, dtype=e4m3), x.new_empty(k, 1, dtype=f32))


def _fp8_row_col_entry(variant, amax_variant):
    def quantize_fp8_row_col(x):
        return torch.ops.lowprec.triton_variant_quantize_fp8_row_col(x.detach(), variant)
    quantize_fp8_row_col.variant = (variant, amax_variant)
    return quantize_fp8_row_col


TRITON_ENTRIES = {"quantize_row_col": _row_col_entry, "quantize_nvfp4": _nvfp4_entry,
                  "quantize_weight_2d": _weight_2d_entry, "quantize_fp8": _fp8_entry,
                  "quantize_fp8_row_col": _fp8_row_col_entry}


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
    from . import fp8
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
FP8_BASE = {FP8_ROWWISE: Fp8Launch(4, 512, 4), FP8_COLUMN: _BASE_COLUMN,
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
    from . import aot
    from .amax import _amax_persistent_kernel
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
    from . import aot
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
    import argparse
    import sys
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
