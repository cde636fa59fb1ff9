"""The shapes and dtypes of every quantize op's outputs, and the padding rule behind them.

Torch-free (a dtype is named by its ``torch`` attribute), so that the reference, the
Triton launchers and every backend's fake (meta) kernel take them from this one place
and promise ``torch.compile`` the same outputs. Each function returns the op's flat
output tuple as ``(shape, dtype name)`` pairs; ``lowprec.backends.tensors.empty_outputs``
makes the uninitialised tensors of a fake kernel from them.

Ops return tensors, never None (a ``torch.library`` schema has no optional outputs):
a copy not asked for is ``ABSENT``, placeholders the backend adapters turn back into
None.
"""

from lowprec.names import NVFP4_BLOCK

UINT8, E4M3, FP32, BF16 = "uint8", "float8_e4m3fn", "float32", "bfloat16"


def padded16(n):
    """``n`` rounded up to a multiple of 16: the row count M_pad of a columnwise copy
    (NUMERICS 10), also the token padding of wgrad's blocks."""
    return -(-n // NVFP4_BLOCK) * NVFP4_BLOCK


def swizzled_scales(rows, cols):
    """``(rows, cols)`` of ``[rows, cols]`` block scales padded for the blocked layout of
    Blackwell's native GEMM (NUMERICS 8): rows to a multiple of 128, columns of 4."""
    return -(-rows // 128) * 128, -(-cols // 4) * 4


def nvfp4(rows_shape, k):
    """A packed copy of ``[*rows_shape, k]``: data (two codes a byte), one E4M3 scale per
    16 elements, the global amax."""
    rows_shape = tuple(rows_shape)
    return (((*rows_shape, k // 2), UINT8), ((*rows_shape, k // NVFP4_BLOCK), E4M3),
            ((), FP32))


def values(rows, cols):
    """A copy in values mode: its bf16 block-dequantized values ``[rows, cols]``, an empty
    E4M3 tensor where the scales would be, the global amax."""
    return (((rows, cols), BF16), ((0,), E4M3), ((), FP32))


# The placeholder copy: what an op returns for a copy it was not asked for.
ABSENT = (((0,), UINT8), ((0,), E4M3), ((), FP32))


def row_col(m, k, rowwise, columnwise, row_values=False, col_values=False):
    """quantize_row_col on ``[M, K]``: rowwise ``[M, K]``, columnwise ``[K, padded16(M)]``,
    each packed or (``*_values``) in values mode, ``ABSENT`` where not asked for."""
    def copy(asked, rows, cols, as_values):
        if not asked:
            return ABSENT
        return values(rows, cols) if as_values else nvfp4((rows,), cols)
    return (copy(rowwise, m, k, row_values)
            + copy(columnwise, k, padded16(m), col_values))


def weight_2d(n, k, columnwise, as_values=False):
    """quantize_weight_2d on ``[N, K]``: W ``[N, K]`` and W^T ``[K, N]`` (``ABSENT`` unless
    ``columnwise``); with ``as_values``, W's bf16 values (then ``columnwise`` is False,
    ``lowprec.checks.weight_values``)."""
    if as_values:
        return values(n, k) + ABSENT
    return nvfp4((n,), k) + (nvfp4((k,), n) if columnwise else ABSENT)


def fp8(rows_shape, k):
    """quantize_fp8 on ``[*rows_shape, k]``: E4M3 data and one FP32 scale per row."""
    rows_shape = tuple(rows_shape)
    return (((*rows_shape, k), E4M3), ((*rows_shape, 1), FP32))


def fp8_row_col(m, k):
    """quantize_fp8_row_col on ``[M, K]``: x per row ``[M, K]`` and x^T per row ``[K, M]``."""
    return fp8((m,), k) + fp8((k,), m)
