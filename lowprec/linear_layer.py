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
  ``quantize_weight_2d`` (or ``quantize_row_col`` without ``weight_2d``) in the forward
  for fprop and one in the backward for dgrad's W^T.
* wgrad contracts over the token dim M, which is arbitrary: X^T and dY^T are padded
  with zero columns to a multiple of 16 (NUMERICS 10).
* FP8 quantizes each operand per row along the contraction dim (NUMERICS 9), so the
  wgrad operands are the rows of X^T and dY^T. FP8 rounds to nearest (no SR).
* What the backward keeps: the quantized X^T of wgrad (an NVFP4 or FP8 copy, 0.56 or
  1 byte per element), never X itself, unless wgrad is ``"bf16"``; nothing of X^T when
  W needs no gradient. W is a Parameter and is kept as it is; the dgrad operand W^T is
  quantized from it in the backward (recomputed rather than saved, see ``_linear_fwd``).
* Stochastic rounding: each forward that will need SR draws one 64-bit Philox key from
  torch's default CPU generator (``lowprec::draw_seed``). Its backward uses counters
  ``[0, ceil(M*N/4))`` for dY (dgrad) and the next ``ceil(N*Mp/4)`` for dY^T (wgrad),
  so the two SR copies of one call never share a word, and calls never share a key
  except by a 64-bit collision (probability below n^2 / 2^65 for n calls).
  ``torch.manual_seed`` therefore fixes every SR word, restoring torch's RNG state
  with a checkpoint resumes the same stream, and non-reentrant activation checkpointing
  (``use_reentrant=False``) replays the same keys because it restores the CPU RNG state
  before recomputing. Inference (no gradient needed) draws nothing, so evaluating a
  model never shifts training's stream. A consequence: reentrant checkpointing, whose
  first forward runs without grad, draws nothing there, and its recomputation draws
  the keys that the layers after it drew in the forward: still deterministic, but
  those keys are shared, so use the non-reentrant kind.

Why custom ops: the Python-level quantization needs ``seed.item()``, which would break
a ``torch.compile`` graph; inside ``torch.library.custom_op``s it is opaque to dynamo,
so fullgraph compilation works. The seed is drawn by a custom op of its own, tagged
``nondeterministic_seeded``, rather than by ``torch.randint`` in the graph: inductor
replaces in-graph ``randint`` with its own generator, which would make compiled runs
draw other keys than eager ones; the custom op draws the same keys in both.

A recipe that is ``"bf16"`` for all three GEMMs quantizes nothing and is exactly
``F.linear`` (same kernels, so the same bits as ``nn.Linear``).
"""

import torch
import torch.nn.functional as F
from torch import nn

from lowprec import ops, reference
from lowprec.formats import FP8Tensor, NVFP4Tensor
from lowprec.recipe import NVFP4_BLOCK, Recipe, shape_problem

DEFAULT_RECIPE = Recipe()

# The seed is a 64-bit Philox key; torch.randint covers [-2^63, 2^63 - 1) in int64,
# which the ops read as the unsigned value.
SEED_LOW, SEED_HIGH = -(1 << 63), (1 << 63) - 1
MASK64 = (1 << 64) - 1


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
# Quantization: one call per operand tensor (X, W, dY), each producing every copy the
# step's GEMMs read. Inputs are 2-D.
# ----------------------------------------------------------------------------------

def rht_sign_vector(rht, signs):
    """The sign vector the wgrad operands carry (None without RHT)."""
    return ops.check_sign_vector(signs or None) if rht else None


def quantize_rows_and_cols(t, row_precision, col_precision, rht, signs, stochastic=False,
                           seed=0, row_offset=0, col_offset=None):
    """(operand along t's rows, operand along t's columns), each for its own precision.

    The NVFP4 copies come from one ``quantize_row_col`` call: the rowwise copy (fprop's X,
    dgrad's dY) and the columnwise copy of t^T, zero-padded along the token dim to a
    multiple of 16, RHT'd with ``signs`` when ``rht`` (wgrad's X^T, dY^T). SR, when asked,
    starts the rowwise copy's counters at ``row_offset`` and the columnwise copy's at
    ``col_offset``; training uses [0, ceil(M*C/4)) for the rowwise copy and the next
    ``ceil(C*M_pad/4)`` for the columnwise one (``col_offset`` None). FP8 quantizes each
    operand along its contraction dim (NUMERICS 9); a precision of None means the copy
    is not needed.
    """
    row_nv, col_nv = row_precision == "nvfp4", col_precision == "nvfp4"
    if col_offset is None:
        col_offset = reference.counters_used(t.numel())
    rows = cols = None
    if row_nv or col_nv:
        rows, cols = ops.quantize_row_col(
            t, rowwise=row_nv, columnwise=col_nv, rht=rht, sign_vector=signs or None,
            row_stochastic=stochastic, col_stochastic=stochastic, seed=seed,
            row_offset=row_offset, col_offset=col_offset)
    if row_precision == "fp8":
        rows = ops.quantize_fp8(t)
    if col_precision == "fp8":
        cols = ops.quantize_fp8(t.t().contiguous())
    return rows, cols


def quantize_weight(weight, fprop, dgrad, weight_2d):
    """(fprop's W, dgrad's W^T) for NVFP4 GEMMs, from one call; None where not needed.

    With ``weight_2d`` the W^T copy holds exactly the transposed codes and 16x16 tile
    scales of W (NUMERICS 5), so fprop and dgrad multiply by one quantized W; without it
    both are 1x16 quantizations, W^T's along N.
    """
    row_nv, col_nv = fprop == "nvfp4", dgrad == "nvfp4"
    if not (row_nv or col_nv):
        return None, None
    if weight_2d:
        # The kernel always writes the rowwise copy: W^T's tiles are made from it.
        qw, qwt = ops.quantize_weight_2d(weight, columnwise=col_nv)
        return (qw if row_nv else None), qwt
    return ops.quantize_row_col(weight, rowwise=row_nv, columnwise=col_nv)


# ----------------------------------------------------------------------------------
# The three GEMMs, each for any precision, on operands already quantized. The planner
# (``lowprec.planner.gemm_error``) runs these same functions to measure their errors.
# ----------------------------------------------------------------------------------

def fprop_gemm(x, qx, weight, qw, bias, precision):
    """Y = X W^T + b in x's dtype."""
    if precision == "bf16":
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
    if precision == "fp8":
        return ops.fp8_gemm(qx, ops.quantize_fp8(weight), bias, out_dtype=x.dtype)
    return ops.nvfp4_gemm(qx, qw, bias, out_dtype=x.dtype)


def dgrad_gemm(grad, qg, weight, qwt, precision):
    """dX = dY W in dY's dtype."""
    if precision == "bf16":
        return grad.mm(weight.to(grad.dtype))       # the expression autograd uses for mm
    if precision == "fp8":
        return ops.fp8_gemm(qg, ops.quantize_fp8(weight.t().contiguous()),
                            out_dtype=grad.dtype)
    return ops.nvfp4_gemm(qg, qwt, out_dtype=grad.dtype)


def wgrad_gemm(grad, qgt, saved_x, weight_dtype, precision):
    """dW = dY^T X in ``weight_dtype``."""
    if precision == "bf16":
        return grad.t().mm(saved_x.to(grad.dtype)).to(weight_dtype)
    gemm = ops.nvfp4_gemm if precision == "nvfp4" else ops.fp8_gemm
    return gemm(qgt, saved_x, out_dtype=weight_dtype)


# Quantized operands travel from the forward op to the backward op as three plain
# tensors each (custom ops take and return tensors only).

def _pack_saved(q, like):
    if q is None:
        return _empty_saved(like)
    if isinstance(q, NVFP4Tensor):
        return q.data, q.scale, q.amax
    return q.data, q.scale, q.scale.new_empty(0)


def _unpack_saved(saved, precision, shape, rht_signs):
    data, scale, amax = saved
    if precision == "fp8":
        return FP8Tensor(data, scale, data.shape)
    return NVFP4Tensor(data, scale, amax, shape, rht_signs=rht_signs)


def _empty_saved(x):
    return tuple(x.new_empty(0, dtype=torch.float32) for _ in range(3))


def _saved_x_like(x, precision):
    """Empty tensors shaped like the saved wgrad operand X^T."""
    m, k = x.shape
    if precision == "fp8":
        return (x.new_empty(k, m, dtype=torch.float8_e4m3fn),
                x.new_empty(k, 1, dtype=torch.float32), x.new_empty(0, dtype=torch.float32))
    mp = reference.padded16(m)
    return (x.new_empty(k, mp // 2, dtype=torch.uint8),
            x.new_empty(k, mp // NVFP4_BLOCK, dtype=torch.float8_e4m3fn),
            x.new_empty((), dtype=torch.float32))


# ----------------------------------------------------------------------------------
# Custom ops (opaque to torch.compile).
# ----------------------------------------------------------------------------------

@torch.library.custom_op("lowprec::draw_seed", mutates_args=(),
                         tags=(torch.Tag.nondeterministic_seeded,))
def draw_seed(anchor: torch.Tensor) -> torch.Tensor:
    """One 64-bit Philox key from torch's default CPU generator (int64 0-d CPU tensor).

    ``anchor`` is not read: the data dependency keeps the draw after the tensor it is
    made for, i.e. in program order, in a compiled graph too.
    """
    return torch.randint(SEED_LOW, SEED_HIGH, (), dtype=torch.int64)


@draw_seed.register_fake
def _draw_seed_fake(anchor):
    return torch.empty((), dtype=torch.int64)


@torch.library.custom_op("lowprec::linear_fwd", mutates_args=())
def _linear_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                seed: torch.Tensor | None, fprop: str, dgrad: str, wgrad: str, rht: bool,
                stochastic: bool, weight_2d: bool, signs: list[int], save_x: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Y = fprop(x, W, b), plus the quantized X^T that wgrad will read (if ``save_x``).

    X is quantized by one call that makes both of its copies (fprop's rowwise one, and
    wgrad's X^T when saved); W by one call making fprop's copy. The backward quantizes W^T
    again rather than keeping it from here: saved, it would hold 0.56 bytes per weight
    element of every layer from its forward to its backward, on top of the activations,
    while recomputing it costs one read of W per step, small beside the step's GEMMs.

    ``seed`` and ``stochastic`` are not used here; they are inputs so that the backward
    finds the whole recipe among the op's inputs.
    """
    x = x.contiguous()
    # Autocast must not reach the FP32 math inside (it would run the reference GEMM in
    # bf16); the caller has already cast x to the autocast dtype.
    with torch.autocast(x.device.type, enabled=False):
        qx, qxt = quantize_rows_and_cols(x, fprop, wgrad if save_x else None, rht,
                                         rht_sign_vector(rht, signs))
        qw, _ = quantize_weight(weight, fprop, None, weight_2d)
        y = fprop_gemm(x, qx, weight, qw, bias, fprop)
    return (y, *_pack_saved(qxt, x))


@_linear_fwd.register_fake
def _linear_fwd_fake(x, weight, bias, seed, fprop, dgrad, wgrad, rht, stochastic,
                     weight_2d, signs, save_x):
    y = x.new_empty(x.shape[0], weight.shape[0])
    saved_x = _saved_x_like(x, wgrad) if save_x and wgrad != "bf16" else _empty_saved(x)
    return (y, *saved_x)


@torch.library.custom_op("lowprec::linear_bwd", mutates_args=())
def _linear_bwd(grad: torch.Tensor, weight: torch.Tensor, x: torch.Tensor | None,
                x_data: torch.Tensor, x_scale: torch.Tensor, x_amax: torch.Tensor,
                seed: torch.Tensor | None, dgrad: str, wgrad: str, rht: bool,
                stochastic: bool, weight_2d: bool, signs: list[int], need_dx: bool,
                need_dw: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dX, dW) for the recipe; an empty tensor for a gradient not needed.

    dY is quantized by one call for both GEMMs: SR words at counters [0, ceil(M*N/4))
    for dgrad's rowwise copy and the next ``ceil(N*M_pad/4)`` for wgrad's dY^T.
    """
    grad = grad.contiguous()
    seed_value = 0 if seed is None else int(seed.item()) & MASK64
    rht_signs = rht_sign_vector(rht, signs)
    with torch.autocast(grad.device.type, enabled=False):
        qg, qgt = quantize_rows_and_cols(grad, dgrad if need_dx else None,
                                         wgrad if need_dw else None, rht, rht_signs,
                                         stochastic, seed_value)
        dx = grad.new_empty(0)
        if need_dx:
            _, qwt = quantize_weight(weight, None, dgrad, weight_2d)
            dx = dgrad_gemm(grad, qg, weight, qwt, dgrad)
        dw = weight.new_empty(0)
        if need_dw:
            saved_x = x if wgrad == "bf16" else _unpack_saved(
                (x_data, x_scale, x_amax), wgrad, (weight.shape[1],
                                                   reference.padded16(grad.shape[0])),
                rht_signs=rht_signs)
            dw = wgrad_gemm(grad, qgt, saved_x, weight.dtype, wgrad)
    return dx, dw


@_linear_bwd.register_fake
def _linear_bwd_fake(grad, weight, x, x_data, x_scale, x_amax, seed, dgrad, wgrad, rht,
                     stochastic, weight_2d, signs, need_dx, need_dw):
    m, k = grad.shape[0], weight.shape[1]
    dx = grad.new_empty(m, k) if need_dx else grad.new_empty(0)
    dw = weight.new_empty(weight.shape) if need_dw else weight.new_empty(0)
    return dx, dw


def _setup_context(ctx, inputs, output):
    (x, weight, bias, seed, _fprop_p, dgrad, wgrad, rht, stochastic, weight_2d, signs,
     _save_x) = inputs
    _, *saved = output
    ctx.save_for_backward(x if wgrad == "bf16" else None, weight, seed, *saved)
    ctx.recipe_args = (dgrad, wgrad, rht, stochastic, weight_2d, signs)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad_y, *_grad_saved):
    x, weight, seed, *saved = ctx.saved_tensors
    dgrad, wgrad, rht, stochastic, weight_2d, signs = ctx.recipe_args
    need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
    dx, dw = torch.ops.lowprec.linear_bwd(grad_y, weight, x, *saved, seed, dgrad, wgrad,
                                          rht, stochastic, weight_2d, signs, need_dx,
                                          need_dw)
    # The bias gradient is a plain reduction: left outside the op so compile can fuse it.
    db = grad_y.sum(0).to(ctx.bias_dtype) if need_db else None
    return (dx if need_dx else None, dw if need_dw else None, db) + (None,) * 9


torch.library.register_autograd("lowprec::linear_fwd", _backward,
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


def _linear(x, weight, bias, recipe, name):
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a lowprec.Recipe; got {type(recipe).__name__}")
    if not recipe.quantized:
        return F.linear(x, weight, bias)
    if weight.dim() != 2 or x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear needs x [..., K] and weight [N, K]; got x "
                         f"{tuple(x.shape)} and weight {tuple(weight.shape)}")
    check_nvfp4_shape(weight.shape, recipe, name)
    x = _compute_input(x)
    x2d = x.reshape(-1, x.shape[-1])
    grad_on = torch.is_grad_enabled()
    need_dx = grad_on and x.requires_grad
    need_dw = grad_on and weight.requires_grad
    needs_sr = recipe.stochastic_rounding and (
        (need_dx and recipe.dgrad == "nvfp4") or (need_dw and recipe.wgrad == "nvfp4"))
    seed = draw_seed(x2d.detach()) if needs_sr else None
    signs = list(recipe.sign_vector) if recipe.sign_vector is not None else []
    y, *_ = torch.ops.lowprec.linear_fwd(
        x2d, weight, bias, seed, recipe.fprop, recipe.dgrad, recipe.wgrad, recipe.rht,
        recipe.stochastic_rounding, recipe.weight_2d, signs, need_dw)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def linear(x, weight, bias=None, *, recipe=None):
    """``F.linear`` with each GEMM in the precision of ``recipe`` (NUMERICS 7).

    Args:
        x: ``[..., K]`` float tensor (any number of leading dims, any token count).
        weight: ``[N, K]``; bias: ``[N]`` or None.
        recipe: a ``lowprec.Recipe``; None means the NVFP4 defaults (``Recipe()``).

    Returns:
        ``[..., N]`` in x's dtype (the autocast dtype under autocast).

    Raises:
        ValueError: mismatched shapes, or an NVFP4 GEMM with K or N not a multiple of 16.
    """
    return _linear(x, weight, bias, DEFAULT_RECIPE if recipe is None else recipe, None)


class RecipeMixin:
    """The validated ``recipe`` attribute of a module that multiplies by one linear weight.

    ``None`` means ``DEFAULT_RECIPE``; a recipe whose NVFP4 GEMMs the weight cannot take
    (NUMERICS 10) is refused when set, naming the layer by ``lowprec_name`` or, before
    ``convert`` names it, by ``_unnamed_label()``. Subclasses give ``linear_shape``:
    ``(N, K)`` of the weight as ``linear`` multiplies by it.
    """

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
        return _linear(x, self.weight, self.bias, self.recipe, self.lowprec_name)

    def extra_repr(self):
        return f"{super().extra_repr()}, recipe={self.recipe}"
