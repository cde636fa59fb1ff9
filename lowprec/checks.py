"""Argument checks shared by every entry point (ops.py, the backend adapters, the
training layer): one function per kind of argument, each raising an error that names the
argument and its value. Torch-free and importing nothing of lowprec, so every layer, the
kernels included, takes them from here."""

import numbers


def sign_vector(signs, name="sign_vector"):
    """The 16 RHT signs as a tuple of +-1 ints, or ValueError naming ``name``.

    Accepts a flat list/tuple of 16 numbers or a 1-D non-bool tensor of 16 entries, each
    +1 or -1. Bools (``True == 1`` in Python), strings and nested lists are refused rather
    than coerced.
    """
    # A tensor (or array) is judged by its ``tolist()``: a bool tensor gives bools, a 2-D
    # one nested lists and a 0-d one a scalar, all refused below like their list forms.
    entries = signs.tolist() if hasattr(signs, "tolist") else signs
    ok_kind = isinstance(entries, (list, tuple)) and all(
        isinstance(s, numbers.Real) and not isinstance(s, bool) for s in entries)
    if not ok_kind or len(entries) != 16 or any(s not in (1, -1) for s in entries):
        raise ValueError(f"{name} must be 16 entries of +1/-1 (ints, a flat list or a 1-D "
                         f"tensor); got {signs!r}")
    return tuple(int(s) for s in entries)


# Seeds and Philox counter offsets are uint64; torch op schemas carry signed int64. The
# two functions below map between them bit for bit (wrapping, as the counters do).
UINT64_SPAN = 1 << 64


def as_int64(value):
    """A uint64 (seed, offset; any int, taken mod 2**64) as the int64 with the same bits."""
    value = int(value) % UINT64_SPAN
    return value - UINT64_SPAN if value >= UINT64_SPAN // 2 else value


def uint64(value, name):
    """Check a seed or counter offset: an int (not a bool) in [0, 2**64), or TypeError /
    ValueError naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if not 0 <= value < UINT64_SPAN:
        raise ValueError(f"{name} must be in [0, 2**64); got {value}")


def as_uint64(value):
    """An int64 (or any int) as the uint64 in [0, 2**64) with the same low 64 bits."""
    return int(value) % UINT64_SPAN


# quantize_weight_2d(values=True) gives W's values only (W^T's are their transpose): the
# ValueError of every backend, the C++ ops' included (csrc/ops.h check_weight_values).
WEIGHT_VALUES_ERROR = ("quantize_weight_2d(values=True) gives W's values only: pass "
                       "columnwise=False and use .t() for W^T (exactly its values)")


def weight_values(columnwise, values):
    """Raises ValueError for quantize_weight_2d's ``values`` with ``columnwise``."""
    if values and columnwise:
        raise ValueError(WEIGHT_VALUES_ERROR)
