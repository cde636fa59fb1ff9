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

# Stochastic-rounding keys: the per-layer call counts a resumed run restores.
from lowprec.sr_keys import load_state_dict as load_sr_state_dict  # noqa: E402
from lowprec.sr_keys import state_dict as sr_state_dict  # noqa: E402
from lowprec.sr_keys import keys_on_device as sr_keys_on_device  # noqa: E402
from lowprec.sr_keys import keys_on_host as sr_keys_on_host  # noqa: E402

__all__ += ["load_sr_state_dict", "sr_state_dict", "sr_keys_on_device", "sr_keys_on_host"]

# Gradient accumulation: quantize each weight once per step.
from lowprec.weight_reuse import reusing_weight_copies  # noqa: E402

__all__ += ["reusing_weight_copies"]
