"""What each GEMM of a linear layer computes when its operands are quantized.

The planner compares these against the high-precision products. Each function runs the
training layer's own quantizers and GEMMs (``lowprec.linear_layer``: the same
``quantize_rows_and_cols``, ``quantize_weight`` and ``*_gemm`` calls as the custom ops
``lowprec::linear_fwd`` / ``linear_bwd``) on one GEMM at a time, with the switches of a
``lowprec.Recipe`` (None: ``Recipe()``, NUMERICS 7). Inputs are FP32, so the products
come out in FP32 and only quantization (not a final BF16 rounding, which BF16 training
has too) shows in the difference.

- fprop ``Y = X W^T``: NVFP4 X 1x16 RNE, W 16x16 (``weight_2d``) or 1x16 RNE; FP8 per
  row along K.
- dgrad ``dX = G W``: NVFP4 G 1x16 with SR (``stochastic_rounding``), W^T the transposed
  2-D copy; FP8 per row along N.
- wgrad ``dW = G^T X``: NVFP4 G^T and X^T with RHT (``rht``), G^T with SR, X^T RNE, the
  token dim M zero-padded to 16; FP8 per row along M.

What differs from training is only where the SR words come from: training draws one key
per forward and starts dgrad's words at counter 0 and wgrad's after them; here an
explicit ``SeedStream`` (a fixed seed and an offset advanced by each SR quantization)
keeps statistics reproducible and no two SR quantizations share random words
(NUMERICS 4.1).
"""

import torch

from lowprec import reference
from lowprec.checks import as_uint64
from lowprec.linear_layer import (
    DEFAULT_RECIPE,
    dgrad_gemm,
    fprop_gemm,
    quantize_rows_and_cols,
    quantize_weight,
    rht_sign_vector,
    wgrad_gemm,
)

QUANTIZED = ("nvfp4", "fp8")


class SeedStream:
    """A fixed Philox seed with an offset that each SR quantization advances."""

    def __init__(self, seed):
        self.seed = as_uint64(seed)
        self.offset = 0

    def take(self, numel):
        """The offset for one SR quantization of ``numel`` elements; advances past it."""
        offset = self.offset
        self.offset = as_uint64(self.offset + reference.counters_used(numel))
        return offset


def _no_autocast(t):
    """Autocast must not turn the GEMMs' FP32 accumulation (NUMERICS 8, 9) into bf16."""
    return torch.autocast(t.device.type, enabled=False)


def _signs(recipe):
    return rht_sign_vector(recipe.rht, recipe.sign_vector)


def _sr_words(seeds, numel, gemm):
    """``(seed, offset)`` of one SR quantization of ``numel`` elements."""
    if seeds is None:
        raise ValueError(f"{gemm} with stochastic rounding needs a SeedStream; got "
                         f"seeds=None")
    return seeds.seed, seeds.take(numel)


def fprop(x, w, precision, recipe=None):
    """``Q(X) Q(W)^T`` for ``x [M, K]``, ``w [N, K]`` (FP32)."""
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    x = x.contiguous()
    with _no_autocast(x):
        qx, _ = quantize_rows_and_cols(x, precision, None, recipe.rht, _signs(recipe))
        qw, _ = quantize_weight(w, precision, None, recipe.weight_2d)
        return fprop_gemm(x, qx, w, qw, None, precision)


def dgrad(g, w, precision, recipe=None, seeds=None):
    """``Q(G) Q(W^T)^T = dX`` for ``g [M, N]``, ``w [N, K]``."""
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    g = g.contiguous()
    stochastic = precision == "nvfp4" and recipe.stochastic_rounding
    seed, offset = _sr_words(seeds, g.numel(), "dgrad") if stochastic else (0, 0)
    with _no_autocast(g):
        qg, _ = quantize_rows_and_cols(g, precision, None, recipe.rht, _signs(recipe),
                                       stochastic, seed, row_offset=offset)
        _, qwt = quantize_weight(w, None, precision, recipe.weight_2d)
        return dgrad_gemm(g, qg, w, qwt, precision)


def wgrad(g, x, precision, recipe=None, seeds=None):
    """``Q(G^T) Q(X^T)^T = dW`` for ``g [M, N]``, ``x [M, K]``; contraction over tokens."""
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    g, x = g.contiguous(), x.contiguous()
    signs = _signs(recipe)
    stochastic = precision == "nvfp4" and recipe.stochastic_rounding
    numel = g.shape[1] * reference.padded16(g.shape[0])       # G^T padded along the tokens
    seed, offset = _sr_words(seeds, numel, "wgrad") if stochastic else (0, 0)
    with _no_autocast(g):
        _, qgt = quantize_rows_and_cols(g, None, precision, recipe.rht, signs, stochastic,
                                        seed, col_offset=offset)
        _, qxt = quantize_rows_and_cols(x, None, precision, recipe.rht, signs)
        return wgrad_gemm(g, qgt, qxt, x.dtype, precision)
