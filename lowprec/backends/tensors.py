"""Tensors the backend adapters (``lowprec.backends.extension``, ``lowprec.kernels.backend``)
hand to their ops and take back: the outputs a fake (meta) kernel promises, made from the
torch-free shapes of ``lowprec.shapes``, the amax operand, and the named results.
"""

import torch

from lowprec import shapes
from lowprec.checks import as_int64
from lowprec.copies import NVFP4Copy, RowCol


def empty_outputs(like, specs):
    """Uninitialised tensors on ``like``'s device for ``specs``, the ``(shape, dtype
    name)`` pairs of one of ``lowprec.shapes``' functions (a fake kernel's outputs)."""
    return tuple(like.new_empty(shape, dtype=getattr(torch, dtype)) for shape, dtype in specs)


def absent(like):
    """The placeholder copy of one not asked for (``shapes.ABSENT``)."""
    return empty_outputs(like, shapes.ABSENT)


def amax_operand(amax, device):
    """A caller's global amax (a number or a tensor) as the FP32 0-d tensor an op takes,
    or None (the op measures it)."""
    if amax is None:
        return None
    return torch.as_tensor(amax, dtype=torch.float32, device=device).detach().reshape(())


def seed_operands(seed):
    """The Philox key as an op's ``(int seed, Tensor? seed_tensor)``: an int (taken mod
    2^64) goes by value; a one-element int64 tensor (``lowprec.sr_keys`` device keys) by
    reference, read by the kernel when it runs."""
    if isinstance(seed, torch.Tensor):
        return 0, seed.reshape(1)
    return as_int64(seed), None


def sign_list(rht_signs):
    """The 16 RHT signs as the ``int[]`` an op schema takes, or None for no RHT."""
    return None if rht_signs is None else [int(s) for s in rht_signs]


def row_col(out, rowwise, columnwise):
    """An op's six flat outputs as ``RowCol`` of ``NVFP4Copy``, None for a copy not asked
    for (its outputs were the placeholders)."""
    return RowCol(NVFP4Copy(*out[:3]) if rowwise else None,
                  NVFP4Copy(*out[3:]) if columnwise else None)
