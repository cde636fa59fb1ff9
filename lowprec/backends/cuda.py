"""The CUDA C++ kernels of csrc/ (quantize.cu) as a backend.

Quantization runs in the CUDA kernels, packed or in values mode (a copy written as its
bf16 block-dequantized values, for the Hopper GEMM emulation: ``QUANTIZE_VALUES``),
through the extension's one adapter, ``lowprec.backends.extension``. ``nvfp4_gemm`` is
the native block-scaled FP4 GEMM of Blackwell (``lowprec.blackwell``, through torch's
``scaled_mm``); the shapes it cannot take run the Triton kernels' dequantize + mm
(``lowprec.kernels.nvfp4_gemm``, the kernel the Triton backend runs too). On Hopper the
NVFP4 GEMM is the Triton backend's emulation, on the values this backend's quantizers
write; ``own_values_gemm`` may take over its GEMM half (``VALUES_GEMM``). Everything else
(dequantization, FP8, the NVFP4 GEMM of packed operands on Hopper) is not implemented
here: ``backend="auto"`` takes it from the Triton backend, never from the reference.
"""

import warnings

import torch

from lowprec import _C, blackwell
from lowprec.backends import extension
from lowprec.kernels import nvfp4_gemm as triton_gemm

MIN_CAPABILITY = _C.MIN_CAPABILITY
# The quantizers: the extension's, on CUDA tensors.
quantize_nvfp4 = extension.quantize_nvfp4
quantize_row_col = extension.quantize_row_col
quantize_weight_2d = extension.quantize_weight_2d
QUANTIZE_OPS = ("quantize_nvfp4", "quantize_row_col", "quantize_weight_2d")
# The quantizers take row_values / col_values (quantize_row_col) and values
# (quantize_weight_2d), in every kernel variant: see lowprec.backends.KernelTable.nvfp4_values.
QUANTIZE_VALUES = True
NATIVE_FP4_GEMM = "triton:scaled_mm_scales + torch:scaled_mm(nvfp4)"
# What runs, per call, for the shapes the native GEMM cannot take (the Triton kernels').
SHAPE_FALLBACK = "dequant+torch.mm"

# The Hopper emulation's GEMM on the quantizers' bf16 values (values mode, see
# lowprec.backends.KernelTable.nvfp4_values), by name, with what `lowprec info
# --dispatch` calls it:
# - "mm_epilogue": torch.mm with an FP32 result, then the Triton epilogue launch (alpha,
#   bias, one rounding); measured on the H200 (bench/results/NVIDIA_H200-20261127).
# - "cublaslt": the extension's nvfp4_gemm_values, one cuBLASLt call that reads alpha
#   from device memory and writes the output dtype itself: no FP32 product in memory and
#   no epilogue launch (a bias or an fp16 output still takes "mm_epilogue"). Not yet run
#   on a GPU, so not the default until bench/gpu_check.sh has checked and timed it
#   (lowprec/bench/bench_nvfp4_gemm.py's values rows; bench/KERNELS.md has the arithmetic).
VALUES_GEMMS = {"mm_epilogue": SHAPE_FALLBACK,
                "cublaslt": "cuda:nvfp4_gemm_values(cuBLASLt; with a bias or an fp16 output: "
                            "dequant+torch.mm)"}
# What cuBLASLt writes from bf16 operands with FP32 accumulation.
CUBLASLT_OUTPUTS = (torch.bfloat16, torch.float32)
VALUES_GEMM = "mm_epilogue"


def availability(device_type):
    if device_type != "cuda":
        return f"the cuda backend runs on CUDA tensors only; got device type {device_type!r}"
    return extension.REASON or _C.cuda_reason()


def implementation(op, capability):
    """What this backend runs for ``op`` on a GPU of ``capability`` (see lowprec.backends)."""
    if capability is None or capability < MIN_CAPABILITY:
        return None
    if op in QUANTIZE_OPS:
        return f"cuda:{op}"
    if (op == "nvfp4_gemm" and capability >= blackwell.MIN_CAPABILITY
            and blackwell.TORCH_REASON is None):
        return f"{NATIVE_FP4_GEMM}; K % 32 != 0: {SHAPE_FALLBACK}"
    return None


def gemm_values_cublaslt(a_values, a_amax, b_values, b_amax, bias=None,
                         out_dtype=torch.bfloat16):
    """``kernels.nvfp4_gemm.gemm_values``' contract in one cuBLASLt call (plus the launch
    that writes alpha); with a bias (its epilogue adds it) or an fp16 output (which
    cuBLASLt does not write from bf16 operands), ``gemm_values`` itself."""
    if bias is not None or out_dtype not in CUBLASLT_OUTPUTS:
        return triton_gemm.gemm_values(a_values, a_amax, b_values, b_amax, bias, out_dtype)
    return extension.nvfp4_gemm_values(a_values, a_amax, b_values, b_amax, out_dtype)


def own_values_gemm(capability, installed=False):
    """``(gemm_values, its name)`` where this backend multiplies its quantizers' values
    itself (see ``KernelTable._values_mode``): on Hopper when ``VALUES_GEMM`` is
    "cublaslt", else None (the Triton backend's mm + epilogue). "cublaslt" where the
    extension was built without it (``installed``: assume it was) warns with the reason
    and returns None."""
    if VALUES_GEMM != "cublaslt" or capability is None or capability >= blackwell.MIN_CAPABILITY:
        return None
    reason = None if installed else _C.cublaslt_reason()
    if reason is not None:
        warnings.warn(f"lowprec: the NVFP4 GEMM on values runs {SHAPE_FALLBACK}, not "
                      f"cuBLASLt: {reason}", RuntimeWarning, stacklevel=2)
        return None
    return gemm_values_cublaslt, VALUES_GEMMS["cublaslt"]


def nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
               out_dtype=torch.bfloat16):
    """The native FP4 GEMM; shapes it cannot take (K % 32 != 0) go to the Triton GEMM,
    which has the same contract (NUMERICS 8). The kernel table takes this function only
    where ``implementation`` names the native GEMM (sm_100+, a torch that has it), so
    only the shape is asked here."""
    if blackwell.shape_reason(a_data) is None:
        return blackwell.nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax,
                                    bias=bias, out_dtype=out_dtype)
    return triton_gemm.nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax,
                                  bias=bias, out_dtype=out_dtype)
