"""The quantized linear layer: NUMERICS 7 as an autograd function, and ``Linear``.

One call of ``linear(x, W, b, recipe=r)`` runs three GEMMs, each in the precision the
recipe gives it (any mix of ``"nvfp4"``, ``"fp8"``, ``"bf16"``):

===========  ==================  ==========================  ==========================
GEMM         computes            operand A                   operand B
===========  ==================  ==========================  ==========================
fprop        Y  = X W^T + b      X: 1x16 RNE                 W: 16x16 RNE (``weight_2d``)
dgrad        dX = dY W           dY: 1x16, SR                W^T: 16x16 RNE, from W
wgrad        dW = dY^T X         dY^T: RHT, 1x16, SR         X^T: RHT, 1x16 RNE
===========  ==================  ==========================  ==========================

* Every operand is quantized from the high-precision tensor with its own global amax
  (the rowwise X of fprop and the columnwise X^T of wgrad are two quantizations of X).
* One quantize call per tensor and pass makes every copy the GEMMs read: X (forward)
  and dY (backward) each go through one ``quantize_row_col`` (rowwise copy + padded,
  RHT'd columnwise copy, no transpose or pad copies in between); W through one
  ``quantize_weight_2d`` (or ``quantize_row_col`` without ``weight_2d``) in the forward,
  which makes fprop's W and dgrad's W^T from one read.
* Where the NVFP4 GEMM multiplies bf16 values (Hopper's emulation: dequantize, mm,
  epilogue; ``KernelTable.nvfp4_values``), the quantizers write those values directly
  (values mode) for every operand, the X^T kept for the backward included, so no
  dequantize runs (the saved X^T then weighs what nn.Linear's saved bf16 X does). The
  bits are those of the packed path (the values are exact).
* wgrad contracts over the token dim M, which is arbitrary: X^T and dY^T are padded
  with zero columns to a multiple of 16 (NUMERICS 10).
* FP8 quantizes each operand per row along the contraction dim (NUMERICS 9), so the
  wgrad operands are the rows of X^T and dY^T; a tensor needed in both layouts goes
  through one ``quantize_fp8_row_col`` call. FP8 rounds to nearest (no SR).
* What the backward keeps: the quantized X^T of wgrad (an NVFP4 or FP8 copy, 0.56 or
  1 byte per element), never X itself, unless wgrad is ``"bf16"``; nothing of X^T when
  W needs no gradient. W is a Parameter and is kept as it is; dgrad's quantized W^T
  (0.56 bytes per weight element in NVFP4) is kept from the forward to the backward of
  the call, rather than W read and quantized a second time. It is not kept across calls:
  a weight's ``_version`` does not see every change (FSDP2 preserves it across its
  all-gathers, ``.data`` writes bypass it), so reuse across micro-batches would need the
  caller to say when the weight changed.
* Stochastic rounding: each forward that will need SR takes one 64-bit Philox key from
  its layer's ``SRStream`` (``lowprec.sr_keys``: the run's seed, the layer's name and the
  layer's own call count; ``lowprec::next_sr_key`` when compiled, the same key). Its
  backward uses counters ``[0, ceil(M*N/4))`` for dY (dgrad) and the next
  ``ceil(N*Mp/4)`` for dY^T (wgrad), so the two SR copies of one call never share a
  word. Keys do not depend on the order in which layers run (eager and compiled runs
  draw the same), ``torch.manual_seed`` fixes them, a resumed run restores the counts
  (``lowprec.sr_state_dict``), and activation checkpointing draws the words of the same
  run without it. Inference (no gradient needed) draws nothing, so evaluating a model
  never shifts training's stream. With device keys (``lowprec.sr_keys_on_device``, for
  CUDA graphs) the key is a one-element tensor on the device that the quantize kernel
  reads when it runs: the same key for the same count, made by a kernel a captured
  graph replays.

Two entries, one computation: eager calls run ``_LinearFunction`` (an
``autograd.Function`` calling the device's kernel table, no op dispatch of its own,
which is what keeps the host's cost per layer near ``nn.Linear``'s); under
``torch.compile`` the same ``_forward``/``_backward`` run inside the custom ops
``lowprec::linear_fwd``/``linear_bwd``, because the Python-level quantization needs
``seed.item()``, which would break a graph, while a custom op is opaque to dynamo, so
fullgraph compilation works. The key comes from ``lowprec::next_sr_key``, an op that
advances the layer's count as the eager path does.

A recipe that is ``"bf16"`` for all three GEMMs quantizes nothing and is exactly
``F.linear`` (same kernels, so the same bits as ``nn.Linear``).
"""

import enum
import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lowprec import ops, reference, sr_keys
from lowprec.backends import kernel_table
from lowprec.formats import FP8Tensor, NVFP4Tensor
from lowprec.names import NVFP4_BLOCK, shape_problem
from lowprec.recipe import Recipe

DEFAULT_RECIPE = Recipe()
# Autocast off around the eager path's kernels: torch's own C++ guard (what AOTAutograd's
# runtime uses) costs a sixth of ``torch.autocast(..., enabled=False)``'s Python set-up per
# call; the same effect for the kernels inside (it switches off every device's autocast).
_no_autocast = getattr(torch._C, "_DisableAutocast", None)



def check_nvfp4_shape(weight_shape, recipe, name=None):
    """Raise ValueError if ``recipe`` runs a GEMM in NVFP4 on a weight it cannot take.

    NUMERICS 10: K and N of an NVFP4 layer must be multiples of 16 (``shape_problem``).
    """
    if not recipe.uses("nvfp4"):
        return
    n, k = weight_shape
    if shape_problem(n, k) is not None:
        layer = name or f"Linear(in_features={k}, out_features={n})"
        raise ValueError(f"nvfp4 needs K % 16 == 0 and N % 16 == 0; layer {layer} has "
                         f"weight shape (N={n}, K={k}); use a recipe without nvfp4 "
                         f"(e.g. Recipe.uniform('bf16')) for this layer")


# ----------------------------------------------------------------------------------
# A recipe as the hot path reads it: resolved once per recipe, compared by identity.
# ----------------------------------------------------------------------------------

class Precision(str, enum.Enum):
    """A GEMM's precision (equal to its name, so ``Precision.NVFP4 == "nvfp4"``)."""
    BF16 = "bf16"
    FP8 = "fp8"
    NVFP4 = "nvfp4"


BF16, FP8, NVFP4 = Precision.BF16, Precision.FP8, Precision.NVFP4


class LayerConfig(NamedTuple):
    """What one call of the layer needs from its recipe, checked and resolved."""
    fprop: Precision
    dgrad: Precision
    wgrad: Precision
    signs: tuple | None         # the RHT signs of the wgrad operands; None without RHT
    stochastic: bool            # SR on dY's NVFP4 copies
    weight_2d: bool
    quantized: bool             # any GEMM not BF16


def rht_sign_vector(rht, signs):
    """The sign vector the wgrad operands carry (None without RHT)."""
    return ops.check_sign_vector(signs or None) if rht else None


@functools.lru_cache(maxsize=None)
def _config(fprop, dgrad, wgrad, rht, signs, stochastic, weight_2d):
    precisions = Precision(fprop), Precision(dgrad), Precision(wgrad)
    return LayerConfig(*precisions, rht_sign_vector(rht, signs), stochastic, weight_2d,
                       any(p is not BF16 for p in precisions))


def layer_config(recipe):
    """The ``LayerConfig`` of a ``Recipe`` (cached: equal recipes share one)."""
    return _config(recipe.fprop, recipe.dgrad, recipe.wgrad, recipe.rht, recipe.sign_vector,
                   recipe.stochastic_rounding, recipe.weight_2d)


# ----------------------------------------------------------------------------------
# Quantization: one call per operand tensor (X, W, dY), each producing every copy the
# step's GEMMs read. Inputs are 2-D and already checked (the layer checks its recipe
# and shapes where it is built or called), so these call the backend functions of the
# device's kernel table directly (``lowprec.backends.kernel_table``), with the
# arguments ``lowprec.ops`` would pass them.
# ----------------------------------------------------------------------------------

class NVFP4Values(NamedTuple):
    """An NVFP4 GEMM operand as its bf16 values ``e2m1 * s_b`` (no global scale; exact,
    NUMERICS 8) and its global amax: what a values-mode quantizer writes for a GEMM that
    multiplies values (the Hopper emulation, ``KernelTable.nvfp4_values``). ``values`` is
    laid out as the packed copy would be (rows along the GEMM's output dim); it may be a
    transposed view (dgrad's W^T of a 16x16-scaled W)."""
    values: torch.Tensor
    amax: torch.Tensor


def quantize_rows_and_cols(t, row_precision, col_precision, rht, signs, stochastic=False,
                           seed=0, row_offset=0, col_offset=None, kernels=None,
                           row_values=False, col_values=False):
    """(operand along t's rows, operand along t's columns), each for its own precision.

    The NVFP4 copies come from one ``quantize_row_col`` call: the rowwise copy (fprop's X,
    dgrad's dY) and the columnwise copy of t^T, zero-padded along the token dim to a
    multiple of 16, RHT'd with ``signs`` when ``rht`` (wgrad's X^T, dY^T). SR, when asked,
    starts the rowwise copy's counters at ``row_offset`` and the columnwise copy's at
    ``col_offset``; training uses [0, ceil(M*C/4)) for the rowwise copy and the next
    ``ceil(C*M_pad/4)`` for the columnwise one (``col_offset`` None). FP8 quantizes each
    operand along its contraction dim (NUMERICS 9); a precision of None means the copy
    is not needed. ``kernels``: the device's ``KernelTable`` (looked up when None).
    ``row_values`` / ``col_values``: that NVFP4 copy as ``NVFP4Values`` (values mode; only
    where ``kernels.nvfp4_values``), for a copy a GEMM reads right away.
    """
    kernels = kernels or kernel_table(t.device)
    row_nv, col_nv = row_precision == NVFP4, col_precision == NVFP4
    rows = cols = None
    if row_nv or col_nv:
        if col_offset is None:
            col_offset = reference.counters_used(t.numel())
        rht_signs = (signs or reference.DEFAULT_SIGN_VECTOR) if rht else None
        row_values, col_values = row_values and row_nv, col_values and col_nv
        row, col = kernels.quantize_row_col(
            t, rht_signs=rht_signs, rowwise=row_nv, columnwise=col_nv,
            row_stochastic=stochastic, col_stochastic=stochastic, seed=seed,
            row_offset=row_offset, col_offset=col_offset, row_amax=None, col_amax=None,
            row_values=row_values, col_values=col_values)
        m, k = t.shape
        if row_nv:
            rows = NVFP4Values(row[0], row[2]) if row_values else NVFP4Tensor(*row, (m, k))
        if col_nv:
            cols = (NVFP4Values(col[0], col[2]) if col_values else
                    NVFP4Tensor(*col, (k, reference.padded16(m)), rht_signs=rht_signs))
    if FP8 in (row_precision, col_precision):
        rows_fp8, cols_fp8 = _fp8_copies(t, row_precision == FP8, col_precision == FP8,
                                         kernels)
        rows = rows if rows_fp8 is None else rows_fp8
        cols = cols if cols_fp8 is None else cols_fp8
    return rows, cols


def _fp8_copies(t, rows, cols, kernels):
    """FP8 copies of t along its rows and (as t^T) along its columns, where asked: both
    from one ``quantize_fp8_row_col`` call (two launches, no transpose copy)."""
    m, k = t.shape
    if rows and cols:
        row_data, row_scale, col_data, col_scale = kernels.quantize_fp8_row_col(t)
        return FP8Tensor(row_data, row_scale, (m, k)), FP8Tensor(col_data, col_scale, (k, m))
    if rows:
        return FP8Tensor(*kernels.quantize_fp8(t), (m, k)), None
    if cols:
        return None, FP8Tensor(*kernels.quantize_fp8(t.t().contiguous()), (k, m))
    return None, None


def quantize_weight(weight, fprop, dgrad, weight_2d, kernels=None, values=False):
    """(fprop's W, dgrad's W^T) for the GEMMs' precisions, from as few calls as the
    formats allow; None where not needed.

    NVFP4: with ``weight_2d`` the W^T copy holds exactly the transposed codes and 16x16
    tile scales of W (NUMERICS 5), so fprop and dgrad multiply by one quantized W, both
    copies from one read; without it both are 1x16 quantizations (one fused call), W^T's
    along N. FP8: W per row along K for fprop, W^T per row along N for dgrad (both from
    one call when both are FP8). ``values`` (only where ``kernels.nvfp4_values``): the
    16x16-scaled copies as ``NVFP4Values``, W^T as the transposed view of W's values
    (exactly its values, NUMERICS 5).
    """
    kernels = kernels or kernel_table(weight.device)
    row_nv, col_nv = fprop == NVFP4, dgrad == NVFP4
    qw = qwt = None
    if row_nv or col_nv:
        if weight_2d and values:
            row, _ = kernels.quantize_weight_2d(weight, columnwise=False, stochastic=False,
                                                seed=0, offset=0, amax=None, values=True)
            qw = NVFP4Values(row[0], row[2]) if row_nv else None
            qwt = NVFP4Values(row[0].t(), row[2]) if col_nv else None
        elif weight_2d:
            # The kernel always writes the rowwise copy: W^T's tiles are made from it.
            row, col = kernels.quantize_weight_2d(weight, columnwise=col_nv, stochastic=False,
                                                  seed=0, offset=0, amax=None)
            n, k = weight.shape
            qw = NVFP4Tensor(*row, (n, k), block="16x16") if row_nv else None
            qwt = NVFP4Tensor(*col, (k, n), block="16x16") if col_nv else None
        else:
            qw, qwt = quantize_rows_and_cols(weight, fprop, dgrad, False, None,
                                             kernels=kernels)
    if FP8 in (fprop, dgrad):
        qw_fp8, qwt_fp8 = _fp8_copies(weight, fprop == FP8, dgrad == FP8, kernels)
        qw = qw if qw_fp8 is None else qw_fp8
        qwt = qwt if qwt_fp8 is None else qwt_fp8
    return qw, qwt


# ----------------------------------------------------------------------------------
# The three GEMMs, each for any precision, on operands already quantized (a quantized
# W that is None is quantized here). The planner (``lowprec.planner.gemm_error``) runs
# these same functions to measure their errors. Callers switch autocast off around
# them: it must not turn the FP32 accumulation of NUMERICS 8-9 into a bf16 matmul.
# ----------------------------------------------------------------------------------

def quantized_gemm(qa, qb, bias, precision, out_dtype, kernels):
    """``a @ b^T (+ bias)`` of two quantized operands of ``precision`` (NUMERICS 8, 9)."""
    if precision == FP8:
        return kernels.fp8_gemm(qa.data, qa.scale, qb.data, qb.scale, bias=bias,
                                out_dtype=out_dtype)
    if kernels.nvfp4_values:
        a, b = _as_values(qa, kernels), _as_values(qb, kernels)
        return kernels.nvfp4_gemm_values(a.values, a.amax, b.values, b.amax, bias=bias,
                                         out_dtype=out_dtype)
    return kernels.nvfp4_gemm(qa.data, qa.scale, qa.amax, qb.data, qb.scale, qb.amax,
                              bias=bias, out_dtype=out_dtype)


def _as_values(q, kernels):
    """An NVFP4 operand as values: a packed one (from a caller that quantized without
    values mode, e.g. the planner's GEMM errors) is dequantized here."""
    if isinstance(q, NVFP4Values):
        return q
    return NVFP4Values(kernels.dequantize_values(q.data, q.scale), q.amax)


def fprop_gemm(x, qx, weight, qw, bias, precision, kernels=None):
    """Y = X W^T + b in x's dtype."""
    if precision == BF16:
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
    kernels = kernels or kernel_table(x.device)
    if qw is None:
        qw, _ = quantize_weight(weight, precision, None, True, kernels)
    return quantized_gemm(qx, qw, bias, precision, x.dtype, kernels)


def dgrad_gemm(grad, qg, weight, qwt, precision, kernels=None):
    """dX = dY W in dY's dtype."""
    if precision == BF16:
        return grad.mm(weight.to(grad.dtype))       # the expression autograd uses for mm
    kernels = kernels or kernel_table(grad.device)
    if qwt is None:
        _, qwt = quantize_weight(weight, None, precision, True, kernels)
    return quantized_gemm(qg, qwt, None, precision, grad.dtype, kernels)


def wgrad_gemm(grad, qgt, saved_x, weight_dtype, precision, kernels=None):
    """dW = dY^T X in ``weight_dtype``."""
    if precision == BF16:
        return grad.t().mm(saved_x.to(grad.dtype)).to(weight_dtype)
    return quantized_gemm(qgt, saved_x, None, precision, weight_dtype,
                          kernels or kernel_table(grad.device))


# ----------------------------------------------------------------------------------
# One forward and one backward: the whole of NUMERICS 7 for one call, on 2-D
# contiguous tensors, autocast off. Eager runs call them from ``_LinearFunction``;
# compiled graphs from the custom ops below. Same functions, so the same bits.
# ----------------------------------------------------------------------------------

class WeightCopies:
    """A layer's quantized weight copies kept across calls while the caller promises the
    weight does not change (``lowprec.reusing_weight_copies``: the micro-batches of one
    gradient-accumulation step, as Transformer Engine's ``is_first_microbatch``). A
    copy is taken again when the weight is another tensor, its ``_version`` moved (an
    in-place change), the layer's recipe changed, or dgrad's copy is missing."""

    def __init__(self):
        self.key = self.copies = None

    @staticmethod
    def _key(weight, cfg):
        # A view (Conv1D multiplies by weight.t(), a new view per call) stands for its base.
        base = weight if weight._base is None else weight._base
        return id(base), weight.shape, weight.stride(), weight._version, cfg

    def get(self, weight, cfg, need_dx):
        if self.key == self._key(weight, cfg) and (self.copies[1] is not None
                                                   or not need_dx):
            return self.copies
        return None

    def put(self, weight, cfg, copies):
        self.key, self.copies = self._key(weight, cfg), copies


def _forward(x, weight, bias, cfg, kernels, need_dx, need_dw, reuse=None):
    """(Y, wgrad's X^T or None, dgrad's W^T or None).

    X is quantized by one call that makes both of its copies (fprop's rowwise one, and
    wgrad's X^T when W needs a gradient); W by one call that makes fprop's copy and,
    when X needs a gradient, dgrad's W^T, which the backward then reuses rather than
    reading W again. ``reuse``: the layer's ``WeightCopies`` (eager calls inside
    ``reusing_weight_copies``), whose copies stand in for W's quantization.
    """
    # Values mode keeps wgrad's X^T as values too: the saved operand is then as large as
    # nn.Linear's saved bf16 X (not 0.28x of it), and the backward runs no dequantize.
    values = kernels.nvfp4_values
    qx, qxt = quantize_rows_and_cols(x, cfg.fprop, cfg.wgrad if need_dw else None,
                                     cfg.signs is not None, cfg.signs, kernels=kernels,
                                     row_values=values, col_values=values)
    copies = reuse.get(weight, cfg, need_dx) if reuse is not None else None
    if copies is None:
        copies = quantize_weight(weight, cfg.fprop, cfg.dgrad if need_dx else None,
                                 cfg.weight_2d, kernels, values=values)
        if reuse is not None:
            reuse.put(weight, cfg, copies)
    qw, qwt = copies
    y = fprop_gemm(x, qx, weight, qw, bias, cfg.fprop, kernels)
    return y, qxt, qwt


def _backward(grad, weight, x, qxt, qwt, seed, cfg, kernels, need_dx, need_dw):
    """(dX or None, dW or None). dY is quantized by one call for both GEMMs: SR words at
    counters [0, ceil(M*N/4)) for dgrad's rowwise copy and the next ``ceil(N*M_pad/4)``
    for wgrad's dY^T. ``x`` is read only by a BF16 wgrad, ``qxt`` by a quantized one."""
    values = kernels.nvfp4_values
    qg, qgt = quantize_rows_and_cols(grad, cfg.dgrad if need_dx else None,
                                     cfg.wgrad if need_dw else None, cfg.signs is not None,
                                     cfg.signs, cfg.stochastic, seed, kernels=kernels,
                                     row_values=values, col_values=values)
    dx = dgrad_gemm(grad, qg, weight, qwt, cfg.dgrad, kernels) if need_dx else None
    dw = wgrad_gemm(grad, qgt, x if cfg.wgrad == BF16 else qxt, weight.dtype, cfg.wgrad,
                    kernels) if need_dw else None
    return dx, dw


# A quantized operand travels from forward to backward as its plain tensors (what
# autograd saves, and what custom ops take and return).

def _operand_tensors(q):
    if isinstance(q, NVFP4Values):
        # Contiguous values: wgrad's X^T [K, M_pad] as they are; dgrad's W^T as W's
        # values [N, K], the transposed view of the operand.
        values = q.values if q.values.is_contiguous() else q.values.t()
        return values, q.values.new_empty(0, dtype=torch.float8_e4m3fn), q.amax
    if isinstance(q, NVFP4Tensor):
        return q.data, q.scale, q.amax
    return q.data, q.scale, q.scale.new_empty(0)


def _weight_values(cfg, kernels):
    """Whether dgrad's saved W^T is W's values (values mode, 16x16 scaling)."""
    return kernels.nvfp4_values and cfg.dgrad == NVFP4 and cfg.weight_2d


def _operand(tensors, precision, shape, block, rht_signs):
    data, scale, amax = tensors
    if precision == FP8:
        return FP8Tensor(data, scale, data.shape)
    return NVFP4Tensor(data, scale, amax, shape, block=block, rht_signs=rht_signs)


def _saved_x_operand(tensors, cfg, grad, weight, kernels):
    """wgrad's X^T from its saved tensors: [K, M_pad] (NVFP4, RHT'd as the recipe says;
    its values in values mode)."""
    if cfg.wgrad == NVFP4 and kernels.nvfp4_values:
        return NVFP4Values(tensors[0], tensors[2])
    return _operand(tensors, cfg.wgrad, (weight.shape[1], reference.padded16(grad.shape[0])),
                    "1x16", cfg.signs)


def _autocast_off(t):
    """A context without autocast for the kernels on ``t``'s device."""
    if _no_autocast is not None:
        return _no_autocast()
    return torch.autocast(t.device.type, enabled=False)


class _LinearFunction(torch.autograd.Function):
    """The eager path: one Python call per forward and per backward, no op dispatch of
    its own; the kernels come from the table resolved for the device."""

    @staticmethod
    def forward(ctx, x, weight, bias, cfg, kernels, seed, need_dx, need_dw, reuse):
        x = x.contiguous()
        with _autocast_off(x):
            y, qxt, qwt = _forward(x, weight, bias, cfg, kernels, need_dx, need_dw, reuse)
        ctx.cfg, ctx.kernels, ctx.seed = cfg, kernels, seed
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.qwt = qwt        # made from the W the forward read; autograd keeps W unchanged
        saved_x = ((x,) if cfg.wgrad == BF16 else _operand_tensors(qxt)) if need_dw else ()
        ctx.save_for_backward(weight, *saved_x)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        weight, *saved = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        cfg = ctx.cfg
        grad = grad_y.contiguous()
        x = qxt = None
        if need_dw and cfg.wgrad == BF16:
            (x,) = saved
        elif need_dw:
            qxt = _saved_x_operand(saved, cfg, grad, weight, ctx.kernels)
        with _autocast_off(grad):
            dx, dw = _backward(grad, weight, x, qxt, ctx.qwt, ctx.seed, cfg, ctx.kernels,
                               need_dx, need_dw)
        # The bias gradient is a plain reduction (as in the compiled path).
        db = grad_y.sum(0).to(ctx.bias_dtype) if need_db else None
        return dx, dw, db, None, None, None, None, None, None


# ----------------------------------------------------------------------------------
# Custom ops (opaque to torch.compile): the compiled path.
# ----------------------------------------------------------------------------------

def _op_config(fprop, dgrad, wgrad, rht, stochastic, weight_2d, signs):
    return _config(fprop, dgrad, wgrad, rht, tuple(signs) or None, stochastic, weight_2d)


def _empty_saved(x):
    return tuple(x.new_empty(0, dtype=torch.float32) for _ in range(3))


def _saved_like(x, precision, rows, cols, values=False):
    """Empty tensors shaped like a saved quantized operand of logical shape [rows, cols]
    (``values``: an NVFP4 operand saved as its values)."""
    if values:
        return (x.new_empty(rows, cols, dtype=torch.bfloat16),
                x.new_empty(0, dtype=torch.float8_e4m3fn), x.new_empty((), dtype=torch.float32))
    if precision == FP8:
        return (x.new_empty(rows, cols, dtype=torch.float8_e4m3fn),
                x.new_empty(rows, 1, dtype=torch.float32), x.new_empty(0, dtype=torch.float32))
    return (x.new_empty(rows, cols // 2, dtype=torch.uint8),
            x.new_empty(rows, cols // NVFP4_BLOCK, dtype=torch.float8_e4m3fn),
            x.new_empty((), dtype=torch.float32))


@torch.library.custom_op("lowprec::linear_fwd", mutates_args=())
def _linear_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                seed: torch.Tensor | None, fprop: str, dgrad: str, wgrad: str, rht: bool,
                stochastic: bool, weight_2d: bool, signs: list[int], need_dx: bool,
                need_dw: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                        torch.Tensor, torch.Tensor, torch.Tensor,
                                        torch.Tensor]:
    """``_forward`` as an op: Y, then wgrad's X^T and dgrad's W^T as plain tensors (empty
    where not needed). ``seed`` and ``stochastic`` are not used here; they are inputs so
    that the backward finds the whole recipe among the op's inputs."""
    x = x.contiguous()
    cfg = _op_config(fprop, dgrad, wgrad, rht, stochastic, weight_2d, signs)
    with _autocast_off(x):
        y, qxt, qwt = _forward(x, weight, bias, cfg, kernel_table(x.device), need_dx, need_dw)
    saved_x = _empty_saved(x) if qxt is None else _operand_tensors(qxt)
    saved_w = _empty_saved(x) if qwt is None else _operand_tensors(qwt)
    return (y, *saved_x, *saved_w)


@_linear_fwd.register_fake
def _linear_fwd_fake(x, weight, bias, seed, fprop, dgrad, wgrad, rht, stochastic,
                     weight_2d, signs, need_dx, need_dw):
    (m, k), n = x.shape, weight.shape[0]
    y = x.new_empty(m, n)
    # X^T: [K, M] in FP8, zero-padded to [K, M_pad] in NVFP4 (NUMERICS 10).
    m_saved = m if wgrad == FP8 else reference.padded16(m)
    kernels = kernel_table(x.device)
    saved_x = (_saved_like(x, wgrad, k, m_saved, kernels.nvfp4_values and wgrad == NVFP4)
               if need_dw and wgrad != BF16 else _empty_saved(x))
    cfg = _op_config(fprop, dgrad, wgrad, rht, stochastic, weight_2d, signs)
    if need_dx and _weight_values(cfg, kernels):
        saved_w = _saved_like(x, dgrad, n, k, values=True)
    else:
        saved_w = (_saved_like(x, dgrad, k, n) if need_dx and dgrad != BF16
                   else _empty_saved(x))
    return (y, *saved_x, *saved_w)


@torch.library.custom_op("lowprec::linear_bwd", mutates_args=())
def _linear_bwd(grad: torch.Tensor, weight: torch.Tensor, x: torch.Tensor | None,
                x_data: torch.Tensor, x_scale: torch.Tensor, x_amax: torch.Tensor,
                w_data: torch.Tensor, w_scale: torch.Tensor, w_amax: torch.Tensor,
                seed: torch.Tensor | None, fprop: str, dgrad: str, wgrad: str, rht: bool,
                stochastic: bool, weight_2d: bool, signs: list[int], need_dx: bool,
                need_dw: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``_backward`` as an op: (dX, dW), an empty tensor for a gradient not needed."""
    grad = grad.contiguous()
    cfg = _op_config(fprop, dgrad, wgrad, rht, stochastic, weight_2d, signs)
    # A host key is a 0-d CPU tensor, read here; a device key (1-D, on grad's device) is
    # handed to the quantize kernel, which reads it when it runs.
    seed_value = (0 if seed is None else seed if seed.dim() == 1
                  else int(seed.item()) & sr_keys.MASK64)
    kernels = kernel_table(grad.device)
    n, k = weight.shape
    qxt = qwt = None
    if need_dw and cfg.wgrad != BF16:
        qxt = _saved_x_operand((x_data, x_scale, x_amax), cfg, grad, weight, kernels)
    if need_dx and cfg.dgrad != BF16:
        qwt = (NVFP4Values(w_data.t(), w_amax) if _weight_values(cfg, kernels) else
               _operand((w_data, w_scale, w_amax), cfg.dgrad, (k, n),
                        "16x16" if cfg.weight_2d else "1x16", None))
    with _autocast_off(grad):
        dx, dw = _backward(grad, weight, x, qxt, qwt, seed_value, cfg, kernels, need_dx,
                           need_dw)
    return (grad.new_empty(0) if dx is None else dx,
            weight.new_empty(0) if dw is None else dw)


@_linear_bwd.register_fake
def _linear_bwd_fake(grad, weight, x, x_data, x_scale, x_amax, w_data, w_scale, w_amax,
                     seed, fprop, dgrad, wgrad, rht, stochastic, weight_2d, signs, need_dx,
                     need_dw):
    m, k = grad.shape[0], weight.shape[1]
    dx = grad.new_empty(m, k) if need_dx else grad.new_empty(0)
    dw = weight.new_empty(weight.shape) if need_dw else weight.new_empty(0)
    return dx, dw


def _setup_context(ctx, inputs, output):
    x, weight, bias, seed, *recipe_args, need_dx, need_dw = inputs
    _, *saved = output
    # The saved operands are not differentiable outputs: no zero gradients are made
    # for them in the backward.
    ctx.mark_non_differentiable(*saved)
    ctx.set_materialize_grads(False)
    wgrad = recipe_args[2]
    ctx.save_for_backward(x if need_dw and wgrad == BF16 else None, weight, seed, *saved)
    ctx.recipe_args = recipe_args
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward_op(ctx, grad_y, *_grad_saved):
    x, weight, seed, *saved = ctx.saved_tensors
    need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
    if grad_y is None:      # Y took no part in the loss
        return (None,) * 13
    dx, dw = torch.ops.lowprec.linear_bwd(grad_y, weight, x, *saved, seed, *ctx.recipe_args,
                                          need_dx, need_dw)
    # The bias gradient is a plain reduction: left outside the op so compile can fuse it.
    db = grad_y.sum(0).to(ctx.bias_dtype) if need_db else None
    return (dx if need_dx else None, dw if need_dw else None, db) + (None,) * 10


torch.library.register_autograd("lowprec::linear_fwd", _backward_op,
                                setup_context=_setup_context)


# ----------------------------------------------------------------------------------
# Public function and module.
# ----------------------------------------------------------------------------------

def _compute_input(x):
    """x cast to the autocast dtype when autocast is on (what F.linear would compute in)."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return x.to(torch.get_autocast_dtype(device_type))
    return x


def linear_forward(x, weight, bias, cfg, name, stream, reuse=None):
    """The layer's call. ``cfg``: a ``LayerConfig`` whose recipe was checked against the
    weight's shape where it was set (``RecipeMixin``) or by ``linear``; ``stream``: the
    ``SRStream`` whose next key an SR backward uses; ``reuse``: the layer's
    ``WeightCopies`` inside ``reusing_weight_copies`` (eager calls; a compiled graph
    quantizes W on every call)."""
    if not cfg.quantized:
        return F.linear(x, weight, bias)
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear needs x [..., K] and weight [N, K]; got x "
                         f"{tuple(x.shape)} and weight {tuple(weight.shape)}"
                         + (f" in layer {name}" if name else ""))
    x = _compute_input(x)
    x2d = x.reshape(-1, x.shape[-1])
    grad_on = torch.is_grad_enabled()
    need_dx = grad_on and x.requires_grad
    need_dw = grad_on and weight.requires_grad
    needs_sr = cfg.stochastic and ((need_dx and cfg.dgrad is NVFP4) or
                                   (need_dw and cfg.wgrad is NVFP4))
    if torch.compiler.is_compiling():
        seed = stream.next_key_op() if needs_sr else None
        signs = list(cfg.signs) if cfg.signs is not None else []
        y, *_ = torch.ops.lowprec.linear_fwd(
            x2d, weight, bias, seed, cfg.fprop.value, cfg.dgrad.value, cfg.wgrad.value,
            cfg.signs is not None, cfg.stochastic, cfg.weight_2d, signs, need_dx, need_dw)
    else:
        seed = stream.next_key() if needs_sr else 0
        y = _LinearFunction.apply(x2d, weight, bias, cfg, kernel_table(x2d.device), seed,
                                  need_dx, need_dw, reuse)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def linear(x, weight, bias=None, *, recipe=None, sr_stream=None):
    """``F.linear`` with each GEMM in the precision of ``recipe`` (NUMERICS 7).

    Args:
        x: ``[..., K]`` float tensor (any number of leading dims, any token count).
        weight: ``[N, K]``; bias: ``[N]`` or None.
        recipe: a ``lowprec.Recipe``; None means the NVFP4 defaults (``Recipe()``).
        sr_stream: the ``lowprec.sr_keys.SRStream`` whose next key a stochastically
            rounded backward uses; None: the one stream of all calls that give none
            (``sr_keys.FUNCTIONAL``, whose keys depend on the calls' order).

    Returns:
        ``[..., N]`` in x's dtype (the autocast dtype under autocast).

    Raises:
        ValueError: mismatched shapes, or an NVFP4 GEMM with K or N not a multiple of 16.
    """
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a lowprec.Recipe; got {type(recipe).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"linear needs x [..., K] and weight [N, K]; got x "
                         f"{tuple(x.shape)} and weight {tuple(weight.shape)}")
    check_nvfp4_shape(weight.shape, recipe)
    return linear_forward(x, weight, bias, layer_config(recipe), None,
                          sr_stream or sr_keys.FUNCTIONAL)


class RecipeMixin(sr_keys.NamedStreams):
    """The validated ``recipe`` attribute of a module that multiplies by one linear weight.

    ``None`` means ``DEFAULT_RECIPE``; a recipe whose NVFP4 GEMMs the weight cannot take
    (NUMERICS 10) is refused when set, naming the layer by ``lowprec_name`` or, before
    ``convert`` names it, by ``_unnamed_label()``. Subclasses give ``linear_shape``:
    ``(N, K)`` of the weight as ``linear`` multiplies by it.

    Setting ``lowprec_name`` also keys the layer's stochastic-rounding stream by it
    (``lowprec.sr_keys``); before, the stream is keyed by the order of construction.
    """

    def _named_streams(self):
        if "_sr_stream" not in self.__dict__:       # made with the layer's first name
            self._sr_stream = sr_keys.SRStream()
        return [(self._sr_stream, "")]

    # The layer's WeightCopies while ``reusing_weight_copies`` is active, else None.
    _weight_copies = None

    @property
    def recipe(self):
        return self._recipe

    @recipe.setter
    def recipe(self, recipe):
        recipe = DEFAULT_RECIPE if recipe is None else recipe
        if not isinstance(recipe, Recipe):
            raise TypeError(f"recipe must be a lowprec.Recipe; got {type(recipe).__name__}")
        check_nvfp4_shape(self.linear_shape, recipe,
                          self.lowprec_name or self._unnamed_label())
        self._recipe = recipe
        # What the forward reads: resolved here, once, rather than on every call.
        self._layer_config = layer_config(recipe)


class Linear(RecipeMixin, nn.Linear):
    """``nn.Linear`` whose GEMMs run as ``recipe`` says.

    Same parameters and exactly the same state_dict keys as ``nn.Linear`` (the recipe is
    a plain attribute, not a buffer), so checkpoints load either way. ``lowprec_name``,
    set by ``lowprec.convert``, names the layer in error messages.
    """

    def __init__(self, in_features, out_features, bias=True, recipe=None, device=None,
                 dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.lowprec_name = None
        self.recipe = recipe

    @property
    def linear_shape(self):
        """``(N, K)``: the weight's shape."""
        return tuple(self.weight.shape)

    def _unnamed_label(self):
        return f"Linear(in_features={self.in_features}, out_features={self.out_features})"

    @classmethod
    def from_linear(cls, linear, recipe=None):
        """A ``Linear`` holding the very Parameter objects of ``linear`` (optimizer state,
        hooks on the parameters and tied weights stay valid)."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  recipe=Recipe.uniform("bf16"), device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        new.recipe = recipe
        return new

    def to_linear(self):
        """A plain ``nn.Linear`` holding the same Parameter objects."""
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device="meta")
        plain.weight = self.weight
        plain.bias = self.bias
        plain.train(self.training)
        return plain

    def forward(self, x):
        return linear_forward(x, self.weight, self.bias, self._layer_config, self.lowprec_name,
                              self._sr_stream, self._weight_copies)

    def extra_repr(self):
        return f"{super().extra_repr()}, recipe={self.recipe}"
