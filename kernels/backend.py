"""The Triton backend: the one adapter from the Triton kernels of this package to the
backend interface (``lowprec.backends``; ``backend="triton"``).

Every op is a ``torch.library.custom_op`` in the ``lowprec`` namespace (prefixed
``triton_``) with a fake implementation (the shapes of ``lowprec.shapes``), so
``torch.compile`` traces through them without graph breaks. The quantizers hand their
input to the kernels with its strides (stride 0, as compile may hand over for a
gradient, included); the other ops call ``.contiguous()``. The op schemas carry 64-bit
seeds and offsets as signed int64 (the schema's ``int``); the entry points map [0, 2^64)
onto it and back.

The entry points below have the signatures of ``lowprec.reference``'s ops and return the
same named results (``lowprec.copies``): ``quantize_nvfp4``, ``quantize_row_col``
(activations / gradients, the fused kernel), ``quantize_weight_2d`` (weights, 16x16
tiles, both layouts from one read), ``dequantize_nvfp4``, ``quantize_fp8``,
``quantize_fp8_row_col`` (both FP8 layouts of a 2-D operand, two launches),
``nvfp4_gemm``, ``fp8_gemm``; and ``next_device_sr_key``, the device SR key step of
``lowprec.sr_keys`` (``kernels/sr_key.py``). The quantizers also take ``variant`` (and
those that measure an amax, ``amax_variant``): the name of a launch variant of
``lowprec.kernels.launches`` (same bits), which ``lowprec.kernels.variants`` binds when a
winner names one.

CPU tensors run only in Triton's interpreter (``TRITON_INTERPRET=1`` before the kernels
are imported); ``availability`` says why not otherwise.
"""

import math
import os
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

from lowprec import shapes
from lowprec.backends.tensors import (absent, amax_operand, empty_outputs, row_col, seed_operands,
                                      sign_list)
from lowprec.checks import as_int64, weight_values
from lowprec.copies import FP8Copy, FP8RowCol, NVFP4Copy

# The kernel modules are called through their module (``row_col_kernel.quantize_row_col``),
# so that a test replacing a launcher sees every call.
from . import dequantize as dequantize_kernel
from . import fp8 as fp8_kernels
from . import nvfp4_gemm as gemm_kernels
from . import quantize_2d as tile_kernel
from . import quantize_row_col as row_col_kernel
from . import sr_key as sr_key_kernel
from .launches import BASELINE, tiles

# bf16 loads and stores: Ampere and newer.
MIN_CAPABILITY = (8, 0)
# The quantizers take row_values / col_values (quantize_row_col) and values
# (quantize_weight_2d): see lowprec.backends.KernelTable.nvfp4_values.
QUANTIZE_VALUES = True
QUANTIZE_NAMES = {"quantize_nvfp4": "triton:quantize_nvfp4",
                  "quantize_row_col": "triton:quantize_row_col",
                  "quantize_weight_2d": "triton:quantize_weight_2d",
                  "dequantize_nvfp4": "triton:dequantize",
                  "quantize_fp8": "triton:quantize_fp8",
                  "quantize_fp8_row_col": "triton:quantize_fp8_row_col"}


def implementation(op, capability):
    """What this backend runs for ``op`` on a GPU of ``capability`` (None: CPU tensors, in
    the interpreter); None where it does not implement ``op`` (see lowprec.backends)."""
    if capability is not None and capability < MIN_CAPABILITY:
        return None
    if op in QUANTIZE_NAMES:
        return QUANTIZE_NAMES[op]
    if op == "nvfp4_gemm":
        return gemm_kernels.CANDIDATE_NAMES[gemm_kernels.DEFAULT_CANDIDATE]
    if op == "fp8_gemm":
        return fp8_kernels.gemm_implementation(capability)
    return None


def function_for(op, capability):
    """The function a kernel table (``lowprec.backends.KernelTable``) calls for ``op`` at
    ``capability``: for the GEMMs, their host functions as chosen for that capability
    once (the ops below decide on every call, for callers of the public API); for the
    rest, the entry points below."""
    if op == "fp8_gemm":
        return fp8_kernels.gemm_for(capability)
    if op == "nvfp4_gemm":
        return gemm_kernels.nvfp4_gemm
    return globals()[op]


def values_gemm(capability):
    """``(gemm_values, dequantize_values)`` where this backend's NVFP4 GEMM at
    ``capability`` is the dequantize + mm emulation (see ``KernelTable``), else None."""
    if {gemm_kernels.DEFAULT_CANDIDATE, *gemm_kernels.DISPATCH.values()} != {"dequant_mm"}:
        return None        # another candidate for some shape: packed operands
    return gemm_kernels.gemm_values, gemm_kernels.dequantize_values


def availability(device_type):
    """None when the Triton kernels can run on tensors of ``device_type``, else why not."""
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA device is visible to torch"
        capability = torch.cuda.get_device_capability()
        if capability < MIN_CAPABILITY:
            return (f"the Triton kernels need compute capability 8.0 or newer (bf16); this "
                    f"GPU has {capability[0]}.{capability[1]}")
        return None
    if device_type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return ("Triton runs on CPU tensors only in its interpreter: set "
                    "TRITON_INTERPRET=1 before lowprec.kernels is imported")
        if not isinstance(row_col_kernel._quantize_row_col_kernel, InterpretedFunction):
            return ("TRITON_INTERPRET=1 was set after the Triton kernels were compiled for "
                    "the GPU; set it before lowprec.kernels is imported")
        return None
    return f"Triton kernels do not run on {device_type} tensors"


# ----------------------------------------------------------------------------------
# Custom ops
# ----------------------------------------------------------------------------------

@torch.library.custom_op("lowprec::triton_quantize_nvfp4", mutates_args=())
def _quantize_nvfp4_op(x: Tensor, block: str, rht_signs: Optional[List[int]],
                       stochastic: bool, seed: int, offset: int, amax: Optional[Tensor],
                       variant: str = BASELINE, amax_variant: str = BASELINE
                       ) -> Tuple[Tensor, Tensor, Tensor]:
    tile, amax_tile = tiles("quantize_nvfp4", variant, amax_variant)
    k = x.shape[-1]
    lead = x.shape[:-1]
    x2 = x.reshape(math.prod(lead), k)   # a view when it can be: the kernels take any strides
    if block == "16x16":
        if rht_signs is not None:       # ops.quantize_nvfp4 refuses it; never drop the signs
            raise ValueError("block='16x16' with rht_signs is not supported")
        (data, scale, amax_out), _ = tile_kernel.quantize_2d(
            x2, columnwise=False, stochastic=stochastic, seed=seed, offset=offset, amax=amax,
            tile=tile, amax_tile=amax_tile)
    elif rht_signs is None:
        (data, scale, amax_out), _ = row_col_kernel.quantize_row_col(
            x2, rowwise=True, columnwise=False, row_stochastic=stochastic, seed=seed,
            row_offset=offset, row_amax=amax, tile=tile, amax_tile=amax_tile)
    else:
        # RHT along the last dim = the fused kernel's columnwise copy of x2^T (a strided
        # view, no copy): its "M" is our K (a multiple of 16, so no padding), and its flat
        # SR index k*M_pad + m is our row-major index.
        _, (data, scale, amax_out) = row_col_kernel.quantize_row_col(
            x2.t(), rowwise=False, columnwise=True, rht_signs=rht_signs,
            col_stochastic=stochastic, seed=seed, col_offset=offset, col_amax=amax,
            tile=tile, amax_tile=amax_tile)
    return data.reshape(*lead, k // 2), scale.reshape(*lead, k // 16), amax_out


@_quantize_nvfp4_op.register_fake
def _(x, block, rht_signs, stochastic, seed, offset, amax, variant=BASELINE,
      amax_variant=BASELINE):
    return empty_outputs(x, shapes.nvfp4(x.shape[:-1], x.shape[-1]))


@torch.library.custom_op("lowprec::triton_quantize_row_col", mutates_args=())
def _quantize_row_col_op(x: Tensor, rht_signs: Optional[List[int]], rowwise: bool,
                         columnwise: bool, row_stochastic: bool, col_stochastic: bool,
                         seed: int, row_offset: int, col_offset: int,
                         row_amax: Optional[Tensor], col_amax: Optional[Tensor],
                         row_values: bool = False, col_values: bool = False,
                         variant: str = BASELINE, amax_variant: str = BASELINE,
                         seed_tensor: Optional[Tensor] = None
                         ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    tile, amax_tile = tiles("quantize_row_col", variant, amax_variant)
    row, col = row_col_kernel.quantize_row_col(
        x, rowwise=rowwise, columnwise=columnwise, rht_signs=rht_signs,
        row_stochastic=row_stochastic, col_stochastic=col_stochastic,
        seed=seed if seed_tensor is None else seed_tensor,
        row_offset=row_offset, col_offset=col_offset, row_amax=row_amax, col_amax=col_amax,
        tile=tile, amax_tile=amax_tile, row_values=row_values, col_values=col_values)
    return (*(row or absent(x)), *(col or absent(x)))


@_quantize_row_col_op.register_fake
def _(x, rht_signs, rowwise, columnwise, row_stochastic, col_stochastic, seed, row_offset,
      col_offset, row_amax, col_amax, row_values=False, col_values=False, variant=BASELINE,
      amax_variant=BASELINE, seed_tensor=None):
    return empty_outputs(x, shapes.row_col(*x.shape, rowwise, columnwise, row_values,
                                           col_values))


@torch.library.custom_op("lowprec::triton_quantize_weight_2d", mutates_args=())
def _quantize_weight_2d_op(w: Tensor, columnwise: bool, stochastic: bool, seed: int,
                           offset: int, amax: Optional[Tensor], values: bool = False,
                           variant: str = BASELINE, amax_variant: str = BASELINE
                           ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    tile, amax_tile = tiles("quantize_weight_2d", variant, amax_variant)
    row, col = tile_kernel.quantize_2d(w, columnwise=columnwise, stochastic=stochastic,
                                       seed=seed, offset=offset, amax=amax, tile=tile,
                                       amax_tile=amax_tile, values=values)
    return (*row, *(col or absent(w)))


@_quantize_weight_2d_op.register_fake
def _(w, columnwise, stochastic, seed, offset, amax, values=False, variant=BASELINE,
      amax_variant=BASELINE):
    weight_values(columnwise, values)
    return empty_outputs(w, shapes.weight_2d(*w.shape, columnwise, values))


@torch.library.custom_op("lowprec::triton_dequantize_nvfp4", mutates_args=())
def _dequantize_nvfp4_op(data: Tensor, scale: Tensor, amax: Tensor, dtype: torch.dtype) -> Tensor:
    lead, half = data.shape[:-1], data.shape[-1]
    out = dequantize_kernel.dequantize(data.contiguous().reshape(-1, half),
                                       scale.contiguous().reshape(-1, scale.shape[-1]),
                                       amax, dtype)
    return out.reshape(*lead, 2 * half)


@_dequantize_nvfp4_op.register_fake
def _(data, scale, amax, dtype):
    return data.new_empty(*data.shape[:-1], 2 * data.shape[-1], dtype=dtype)


@torch.library.custom_op("lowprec::triton_quantize_fp8", mutates_args=())
def _quantize_fp8_op(x: Tensor, variant: str = BASELINE) -> Tuple[Tensor, Tensor]:
    return fp8_kernels.quantize_fp8(x, tile=tiles("quantize_fp8", variant)[0])


@_quantize_fp8_op.register_fake
def _(x, variant=BASELINE):
    return empty_outputs(x, shapes.fp8(x.shape[:-1], x.shape[-1]))


@torch.library.custom_op("lowprec::triton_quantize_fp8_row_col", mutates_args=())
def _quantize_fp8_row_col_op(x: Tensor, variant: str = BASELINE
                             ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return fp8_kernels.quantize_fp8_row_col(x, tile=tiles("quantize_fp8_row_col", variant)[0])


@_quantize_fp8_row_col_op.register_fake
def _(x, variant=BASELINE):
    return empty_outputs(x, shapes.fp8_row_col(*x.shape))


@torch.library.custom_op("lowprec::triton_nvfp4_gemm", mutates_args=())
def _nvfp4_gemm_op(a_data: Tensor, a_scale: Tensor, a_amax: Tensor, b_data: Tensor,
                   b_scale: Tensor, b_amax: Tensor, bias: Optional[Tensor],
                   out_dtype: torch.dtype) -> Tensor:
    return gemm_kernels.nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax,
                                   bias=bias, out_dtype=out_dtype)


@_nvfp4_gemm_op.register_fake
def _(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias, out_dtype):
    return a_data.new_empty(a_data.shape[0], b_data.shape[0], dtype=out_dtype)


@torch.library.custom_op("lowprec::triton_fp8_gemm", mutates_args=())
def _fp8_gemm_op(a_data: Tensor, a_scale: Tensor, b_data: Tensor, b_scale: Tensor,
                 bias: Optional[Tensor], out_dtype: torch.dtype) -> Tensor:
    return fp8_kernels.fp8_gemm(a_data.contiguous(), a_scale.contiguous(),
                                b_data.contiguous(), b_scale.contiguous(), bias=bias,
                                out_dtype=out_dtype)


@_fp8_gemm_op.register_fake
def _(a_data, a_scale, b_data, b_scale, bias, out_dtype):
    return a_data.new_empty(a_data.shape[0], b_data.shape[0], dtype=out_dtype)


# ----------------------------------------------------------------------------------
# Entry points (signatures of lowprec.reference's ops, plus the variant names)
# ----------------------------------------------------------------------------------

def quantize_nvfp4(x, *, block="1x16", rht_signs=None, stochastic=False, seed=0, offset=0,
                   amax=None, variant=BASELINE, amax_variant=BASELINE):
    return NVFP4Copy(*torch.ops.lowprec.triton_quantize_nvfp4(
        x.detach(), block, sign_list(rht_signs), bool(stochastic), as_int64(seed),
        as_int64(offset), amax_operand(amax, x.device), variant, amax_variant))


def quantize_row_col(x, *, rht_signs=None, rowwise=True, columnwise=True,
                     row_stochastic=False, col_stochastic=False, seed=0, row_offset=0,
                     col_offset=0, row_amax=None, col_amax=None, row_values=False,
                     col_values=False, variant=BASELINE, amax_variant=BASELINE):
    """``lowprec.reference.quantize_row_col`` (inputs validated by
    ``lowprec.ops.quantize_row_col``), bit for bit: the fused kernel, one read of ``x``
    (``[..., K]``, any strides; bf16, fp16 or fp32) for both copies, plus one amax read
    when an amax is not given. Returns ``RowCol`` of ``NVFP4Copy`` (data uint8, scale
    float8_e4m3fn, amax fp32 0-d), None for a copy not asked for.

    ``row_values`` / ``col_values``: that copy is ``(values bfloat16, empty float8_e4m3fn
    [0], amax)``, the values being ``dequantize(data, scale, None, torch.bfloat16)`` of the
    packed copy (rowwise ``[M, K]``, columnwise ``[K, M_pad]``), written by the same single
    launch. ``seed``: an int, or a one-element int64 tensor on x's device that the kernel
    reads (``lowprec.sr_keys`` device keys).
    """
    seed, seed_tensor = seed_operands(seed)
    out = torch.ops.lowprec.triton_quantize_row_col(
        x.detach().reshape(math.prod(x.shape[:-1]), x.shape[-1]), sign_list(rht_signs),
        bool(rowwise), bool(columnwise), bool(row_stochastic), bool(col_stochastic),
        seed, as_int64(row_offset), as_int64(col_offset),
        amax_operand(row_amax, x.device), amax_operand(col_amax, x.device),
        bool(row_values), bool(col_values), variant, amax_variant, seed_tensor)
    return row_col(out, rowwise, columnwise)


def quantize_weight_2d(w, *, columnwise=True, stochastic=False, seed=0, offset=0, amax=None,
                       values=False, variant=BASELINE, amax_variant=BASELINE):
    """``lowprec.reference.quantize_weight_2d`` (inputs validated by
    ``lowprec.ops.quantize_weight_2d``): W and W^T, 16x16 tiles, from one read.

    ``values=True`` (needs ``columnwise=False``, ValueError otherwise): the rowwise copy is
    ``(values bfloat16 [N, K], empty float8_e4m3fn [0], amax)``, the bf16 dequantization
    of the packed W without the global scale; W^T's values are its transpose."""
    weight_values(columnwise, values)
    out = torch.ops.lowprec.triton_quantize_weight_2d(
        w.detach(), bool(columnwise), bool(stochastic), as_int64(seed), as_int64(offset),
        amax_operand(amax, w.device), bool(values), variant, amax_variant)
    return row_col(out, True, columnwise)


def dequantize_nvfp4(data, scale, amax, dtype=torch.float32):
    return torch.ops.lowprec.triton_dequantize_nvfp4(data, scale, amax.detach(), dtype)


def quantize_fp8(x, *, variant=BASELINE):
    return FP8Copy(*torch.ops.lowprec.triton_quantize_fp8(x.detach(), variant))


def quantize_fp8_row_col(x, *, variant=BASELINE):
    return FP8RowCol(*torch.ops.lowprec.triton_quantize_fp8_row_col(x.detach(), variant))


def nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
               out_dtype=torch.bfloat16):
    return torch.ops.lowprec.triton_nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale,
                                               b_amax, bias, out_dtype)


def fp8_gemm(a_data, a_scale, b_data, b_scale, bias=None, out_dtype=torch.bfloat16):
    return torch.ops.lowprec.triton_fp8_gemm(a_data, a_scale, b_data, b_scale, bias, out_dtype)


def next_device_sr_key(counts, stream_base, recomputed=False):
    """The next device SR key of a stream (``lowprec.sr_keys``, ``kernels/sr_key.py``):
    advances ``counts`` (int64 [2] on the GPU) and returns the key, int64 ``[1]``."""
    return sr_key_kernel.next_device_sr_key(counts, stream_base, recomputed)
