"""lowprec: NVFP4 / FP8 / BF16 low-precision training for PyTorch.

The numerics are specified in docs/numerics.md; ``lowprec.reference`` is their executable
form and every backend reproduces its bits.
"""

from lowprec.formats import FP8Tensor, NVFP4Tensor
from lowprec.ops import (
    available,
    dequantize_nvfp4,
    fp8_gemm,
    nvfp4_gemm,
    quantize_fp8,
    quantize_nvfp4,
    quantize_row_col,
    quantize_weight_2d,
)

__version__ = "0.1.0"

__all__ = [
    "FP8Tensor",
    "NVFP4Tensor",
    "available",
    "dequantize_nvfp4",
    "fp8_gemm",
    "nvfp4_gemm",
    "quantize_fp8",
    "quantize_nvfp4",
    "quantize_row_col",
    "quantize_weight_2d",
]

# Training layer.
from lowprec.recipe import Recipe  # noqa: E402
from lowprec.linear_layer import Linear, linear  # noqa: E402
from lowprec.plan import LayerPlan, Plan  # noqa: E402
from lowprec.conversion import convert, unconvert  # noqa: E402
from lowprec.discovery import candidate_layers  # noqa: E402
from lowprec.disable import disabled  # noqa: E402

__all__ += ["LayerPlan", "Linear", "Plan", "Recipe", "candidate_layers", "convert",
            "disabled", "linear", "unconvert"]

# Conv1D (GPT-2 family) and mixture-of-experts layers.
from lowprec.grouped import grouped_linear  # noqa: E402
from lowprec.moe import GroupedExperts, register_experts_adapter  # noqa: E402

__all__ += ["GroupedExperts", "grouped_linear", "register_experts_adapter"]
