"""What each GEMM of a linear layer computes when its operands are quantized.

The planner compares these against the high-precision products. Each function takes
FP32 tensors, quantizes them with the public ops (``lowprec.quantize_nvfp4`` /
``quantize_fp8``) exactly as the training recipe does (NUMERICS 7 and 9), and returns the
FP32 product; the GEMMs run with ``out_dtype=float32`` so that only quantization (not a
final BF16 rounding, which BF16 training has too) shows in the difference.

- fprop ``Y = X W^T``: NVFP4 X 1x16 RNE, W 16x16 (``weight_2d``) or 1x16 RNE; FP8 per
  row along K.
- dgrad ``dX = G W``: NVFP4 G 1x16 with SR (``stochastic_rounding``), W^T the transposed
  2-D copy; FP8 per row along N.
- wgrad ``dW = G^T X``: NVFP4 G^T and X^T with RHT (``rht``), G^T with SR, X^T RNE, the
  token dim M zero-padded to 16; FP8 per row along M.

Stochastic rounding draws from an explicit ``SeedStream``: a fixed seed and an offset
advanced by each call, so statistics are reproducible and no two SR quantizations share
random words (NUMERICS 4.1).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lowprec import ops, reference
from lowprec.recipe import shape_problem as nvfp4_shape_problem  # noqa: F401  (stats reads it)

QUANTIZED = ("nvfp4", "fp8")


@dataclass
class QuantConfig:
    """The recipe switches that change the bits of a quantized GEMM."""

    rht: bool = True
    stochastic_rounding: bool = True
    weight_2d: bool = True
    sign_vector: tuple = None

    @classmethod
    def from_recipe(cls, recipe):
        """Read the switches of a ``lowprec.Recipe`` (or any object with those attributes).

        Missing attributes keep the NVFP4 training defaults of NUMERICS 7.
        """
        if recipe is None:
            return cls()
        defaults = cls()
        return cls(rht=bool(getattr(recipe, "rht", defaults.rht)),
                   stochastic_rounding=bool(getattr(recipe, "stochastic_rounding",
                                                    defaults.stochastic_rounding)),
                   weight_2d=bool(getattr(recipe, "weight_2d", defaults.weight_2d)),
                   sign_vector=getattr(recipe, "sign_vector", None))


class SeedStream:
    """A fixed Philox seed with an offset that each SR quantization advances."""

    def __init__(self, seed):
        self.seed = int(seed) % (1 << 64)
        self.offset = 0

    def take(self, numel):
        """The offset for one SR quantization of ``numel`` elements; advances past it."""
        offset = self.offset
        self.offset = (self.offset + reference.counters_used(numel)) % (1 << 64)
        return offset


def _pad_rows(x, multiple=16):
    """Zero-pad the first dim to a multiple of 16 (zeros change no amax, RHT or product)."""
    extra = (-x.shape[0]) % multiple
    return F.pad(x, (0, 0, 0, extra)) if extra else x


def _nvfp4(x, cfg, seeds, *, block="1x16", rht=False, stochastic=False):
    kwargs = dict(block=block, rht=rht, sign_vector=cfg.sign_vector if rht else None)
    if stochastic:
        kwargs.update(stochastic=True, seed=seeds.seed, offset=seeds.take(x.numel()))
    return ops.quantize_nvfp4(x.contiguous(), **kwargs)


def _fp8_product(a, b):
    return ops.fp8_gemm(ops.quantize_fp8(a.contiguous()), ops.quantize_fp8(b.contiguous()),
                        out_dtype=torch.float32)


def fprop(x, w, precision, cfg):
    """``Q(X) Q(W)^T`` for ``x [M, K]``, ``w [N, K]`` (FP32)."""
    if precision == "fp8":
        return _fp8_product(x, w)
    w_block = "16x16" if cfg.weight_2d else "1x16"
    return ops.nvfp4_gemm(_nvfp4(x, cfg, None), _nvfp4(w, cfg, None, block=w_block),
                          out_dtype=torch.float32)


def dgrad(g, w, precision, cfg, seeds):
    """``Q(G) Q(W^T)^T = dX`` for ``g [M, N]``, ``w [N, K]``."""
    wt = w.t().contiguous()
    if precision == "fp8":
        return _fp8_product(g, wt)
    w_block = "16x16" if cfg.weight_2d else "1x16"
    qg = _nvfp4(g, cfg, seeds, stochastic=cfg.stochastic_rounding)
    return ops.nvfp4_gemm(qg, _nvfp4(wt, cfg, None, block=w_block), out_dtype=torch.float32)


def wgrad(g, x, precision, cfg, seeds):
    """``Q(G^T) Q(X^T)^T = dW`` for ``g [M, N]``, ``x [M, K]``; contraction over tokens."""
    if precision == "fp8":
        return _fp8_product(g.t(), x.t())
    gt = _pad_rows(g).t()
    xt = _pad_rows(x).t()
    qg = _nvfp4(gt, cfg, seeds, rht=cfg.rht, stochastic=cfg.stochastic_rounding)
    qx = _nvfp4(xt, cfg, None, rht=cfg.rht)
    return ops.nvfp4_gemm(qg, qx, out_dtype=torch.float32)
