"""How each Triton kernel variant launches: the tiles, warps and stages of every named
variant per op (``TRITON_LAUNCHES``), and the launch a variant name stands for.

Every variant computes the same bits as the baseline (the launchers' own tile, ``None``
here); ``lowprec.kernels.variants`` names, sweeps and resolves them, and the Triton
backend's ops (``lowprec.kernels.backend``) take the names as arguments and launch with
``tiles`` of them.
"""

import functools
from typing import NamedTuple, Optional

import torch

from .config import interpreting, launch_options

BASELINE = "baseline"


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


def tiles(op, variant, amax_variant=BASELINE):
    """``(tile, amax_tile)``: the launches of ``op``'s variant and of the amax variant it
    measures with, None for a baseline (the launcher's own tile)."""
    tile = None if variant == BASELINE else TRITON_LAUNCHES[op][variant]
    amax_tile = None if amax_variant == BASELINE else AMAX_LAUNCHES[amax_variant]
    return tile, amax_tile
