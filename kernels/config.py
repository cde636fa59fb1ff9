"""Host-side helpers shared by the kernel launchers: input views, tile sizes, constants.

Tile sizes: on a GPU the quantizers use tiles of 16 rows x 256 columns (4096 elements,
32 per thread with 4 warps), small enough to stay in registers with the 16-row RHT
butterfly live. Under ``TRITON_INTERPRET=1`` each program costs a fixed Python overhead
per operation, so the interpreter gets the largest tiles the shape allows instead; the
arithmetic, and therefore every bit, is independent of the tiling.
"""

import functools
import os

import torch
import triton

KIND_OF_DTYPE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def interpreting():
    """True when Triton kernels run in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def launch_options():
    """Extra launch options: FP contraction off on the GPU (an FMA would round once where
    the reference rounds twice; NUMERICS 2 says no fast-math). The interpreter takes none."""
    return {} if interpreting() else {"enable_fp_fusion": False}


def amax_argument(amax, device=None):
    """A global amax as the kernels read it: FP32 ``[1]`` on ``device`` (default: its own)."""
    return amax.detach().to(device=device or amax.device, dtype=torch.float32).reshape(1)


def input_view(x):
    """(tensor the kernel reads, kind): bf16/fp16 are read as int16 bits (nvfp4_math.load_f32)."""
    kind = KIND_OF_DTYPE.get(x.dtype)
    if kind is None:
        raise TypeError(f"expected a float32, bfloat16 or float16 tensor; got {x.dtype}")
    return (x if kind == 0 else x.view(torch.int16)), kind


def output_view(out):
    """(tensor the kernel writes, kind) for a float32 / bfloat16 / float16 output."""
    kind = KIND_OF_DTYPE.get(out.dtype)
    if kind is None:
        raise TypeError(f"output dtype must be float32, bfloat16 or float16; got {out.dtype}")
    return (out if kind != 1 else out.view(torch.int16)), kind


def bias_view(bias, fallback):
    """(tensor the kernel reads, kind) for an optional bias; without one, ``fallback``
    stands in for the pointer the kernel does not read (kind 0)."""
    if bias is None:
        return fallback, 0
    return input_view(bias.contiguous())


def epilogue_tile(m, n):
    """(BLOCK_M, BLOCK_N) of the element-wise GEMM epilogues: 16 x 256 on a GPU; in the
    interpreter one program covers as much as it can (fewer Python-level programs)."""
    if interpreting():
        return min(64, triton.next_power_of_2(m)), min(256, triton.next_power_of_2(n))
    return 16, 256


def tile_config(m, k):
    """(chunks of 16 rows, BLOCK_K, num_warps) for a quantizer tile over [m, k]."""
    if interpreting():
        return (min(8, triton.next_power_of_2(triton.cdiv(max(m, 1), 16))),
                min(512, triton.next_power_of_2(max(k, 16))), 4)
    return 1, 256, 4


@functools.lru_cache(maxsize=32)
def _quarter_signs(signs, device):
    return torch.tensor([0.25 * s for s in signs], dtype=torch.float32, device=device)


def quarter_signs(signs, device):
    """The RHT sign vector as the fp32 device tensor s_j / 4 the kernels read (cached)."""
    return _quarter_signs(tuple(int(s) for s in signs), torch.device(device))
