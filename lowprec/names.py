"""The names every layer shares: precisions, GEMMs, and the shape rule of quantized GEMMs.

Imports nothing (no torch either), so the planner's solver modules, which also run
without torch, take them from here like everything else does.
"""

PRECISIONS = ("nvfp4", "fp8", "bf16")
GEMMS = ("fprop", "dgrad", "wgrad")
NVFP4_BLOCK = 16          # elements per NVFP4 scale block; NUMERICS 10's shape multiple


def shape_problem(n, k):
    """Why a linear weight of shape ``(N, K)`` cannot run quantized GEMMs, or None.

    NUMERICS 10: NVFP4 needs K (fprop's and wgrad's blocks) and N (dgrad's) to be
    multiples of 16. The default plan and the planner keep such a layer BF16 (FP8
    included), with this string as the reason; ``lowprec.Linear`` refuses an NVFP4
    recipe for it.
    """
    if k % NVFP4_BLOCK or n % NVFP4_BLOCK:
        return (f"shape (N={n}, K={k}): nvfp4 and fp8 GEMMs need K and N multiples "
                f"of {NVFP4_BLOCK}")
    return None
