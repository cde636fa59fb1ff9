"""Public quantize / GEMM entry points: validate, allocate containers, dispatch.

Every function here checks its input and raises an error that names the offending
value, then hands plain tensors to the chosen backend (``lowprec.backends``).
"""

import math
import numbers

import torch

from lowprec import backends, checks, reference, shapes
from lowprec.formats import FP8Tensor, NVFP4Tensor

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BLOCKS = ("1x16", "16x16")


def _check_float_input(x, what):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} takes a torch.Tensor; got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{what} takes float32, bfloat16 or float16 input; got {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{what} needs at least one dimension; got a 0-d tensor")


def check_sign_vector(sign_vector):
    """The 16 signs as a tuple of +-1 ints (TE's default for None), or ValueError."""
    if sign_vector is None:
        return reference.DEFAULT_SIGN_VECTOR
    return checks.sign_vector(sign_vector)


def _amax_tensor(amax, device):
    """A caller's global amax as an FP32 0-d tensor; NaN/Inf pass (they mean "non-finite
    input", NUMERICS 2), a negative value would give negative scales and is refused."""
    if amax is None:
        return None
    if isinstance(amax, bool) or not isinstance(amax, (numbers.Real, torch.Tensor)):
        raise TypeError(f"amax must be a real number or a one-element tensor; got "
                        f"{type(amax).__name__} {amax!r}")
    amax = torch.as_tensor(amax, dtype=torch.float32, device=device)
    if amax.numel() != 1:
        raise ValueError(f"amax must be a scalar; got shape {tuple(amax.shape)}")
    if bool(amax < 0):
        raise ValueError(f"amax must be >= 0 (it is a max of |x|); got {amax.item()}")
    return amax.reshape(())


def check_float_dtype(dtype, name):
    """Refuse an output dtype that cannot hold NaN or a fraction (an int dtype would turn
    a NaN into -2147483648 without a word)."""
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be one of float32, bfloat16, float16; got {dtype!r}")


def quantize_nvfp4(x, *, block="1x16", rht=False, sign_vector=None, stochastic=False,
                   seed=0, offset=0, amax=None, backend="auto"):
    """Quantize ``x`` to NVFP4 along its last dimension (NUMERICS 2-6).

    Args:
        x: float32/bfloat16/float16 tensor ``[..., K]`` with K % 16 == 0.
        block: ``"1x16"`` (one scale per 16 elements) or ``"16x16"`` (2-D tiles; needs
            the second-to-last dim to be a multiple of 16; not with ``rht``).
        rht: apply the 16-point random Hadamard transform along the last dim first.
        sign_vector: 16 signs (+-1) for the RHT; default TE's fixed vector. Checked even
            when ``rht`` is False.
        stochastic: stochastic rounding with Philox words from ``(seed, offset)``; the
            call consumes ``ceil(numel / 4)`` counters starting at ``offset``.
        seed, offset: ints in [0, 2**64).
        amax: a global amax the caller already has (of ``rht(x)`` when ``rht``); >= 0,
            or NaN/Inf for a tensor known to hold non-finite values.
        backend: ``"auto"``, ``"reference"``, ``"triton"``, ``"cuda"`` or ``"cpu"``.

    Returns:
        NVFP4Tensor

    Raises:
        TypeError: non-float input. ValueError: bad K, rows, block (or 16x16 with RHT),
        signs, seed/offset, negative amax.
    """
    _check_float_input(x, "quantize_nvfp4")
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}; got {block!r}")
    k = x.shape[-1]
    if k % 16 != 0:
        raise ValueError(f"nvfp4 needs the last dim K % 16 == 0; got shape {tuple(x.shape)}")
    if block == "16x16" and (x.dim() < 2 or x.shape[-2] % 16 != 0):
        raise ValueError(f"block='16x16' needs the row dim (second-to-last) to be a multiple "
                         f"of 16; got shape {tuple(x.shape)}")
    if block == "16x16" and rht:
        raise ValueError("block='16x16' with rht=True is not supported: the RHT belongs to "
                         "the 1x16 wgrad operands (NUMERICS 6-7); pass block='1x16' or "
                         "rht=False")
    # A bad vector is refused even with rht=False, where it would otherwise go unseen.
    signs = check_sign_vector(sign_vector)
    signs = signs if rht else None
    checks.uint64(seed, "seed")
    checks.uint64(offset, "offset")
    impl = backends.get(backend, "quantize_nvfp4", x.device)
    data, scale, amax_out = impl(x, block=block, rht_signs=signs, stochastic=bool(stochastic),
                                 seed=seed, offset=offset, amax=_amax_tensor(amax, x.device))
    return NVFP4Tensor(data, scale, amax_out, x.shape, block=block, rht_signs=signs)


def _check_nvfp4_k(x, what):
    if x.shape[-1] % 16 != 0:
        raise ValueError(f"{what}: nvfp4 needs the last dim K % 16 == 0; got shape "
                         f"{tuple(x.shape)}")


def quantize_row_col(x, *, rowwise=True, columnwise=True, rht=False, sign_vector=None,
                     row_stochastic=False, col_stochastic=False, seed=0, row_offset=0,
                     col_offset=None, row_amax=None, col_amax=None, backend="auto"):
    """The NVFP4 copies every GEMM reading an activation or gradient needs, in one pass.

    ``x [..., K]`` is seen as ``[M, K]`` (leading dims flattened). The spec is
    ``lowprec.reference.quantize_row_col``:

    * rowwise (fprop / dgrad operand): ``x`` quantized along K in 1x16 blocks, shape
      ``[M, K]``;
    * columnwise (wgrad operand): ``x^T`` zero-padded to ``[K, M_pad]`` (M_pad the next
      multiple of 16, NUMERICS 10), optionally RHT'd along M, quantized along M.

    Args:
        x: float32/bfloat16/float16 tensor ``[..., K]`` with K % 16 == 0.
        rowwise, columnwise: which copies to produce (at least one).
        rht, sign_vector: the RHT of the columnwise copy and its 16 signs (default TE's);
            the vector is checked even when ``rht`` is False.
        row_stochastic, col_stochastic: stochastic rounding per copy.
        seed, row_offset, col_offset: Philox key and first counters, ints in [0, 2**64).
            ``col_offset`` defaults to the end of the rowwise range, ``row_offset +
            ceil(M*K/4)`` (mod 2**64), so the two copies never share a random word.
        row_amax, col_amax: global amaxes the caller already has (the columnwise one of
            ``RHT(x^T)`` when ``rht``); measured when None.
        backend: ``"auto"``, ``"reference"``, ``"triton"``, ``"cuda"`` or ``"cpu"``.

    Returns:
        ``(row, col)``: NVFP4Tensors of logical shapes ``[M, K]`` and ``[K, M_pad]`` (col
        carries the RHT signs), or None for a copy not asked for.

    Raises:
        TypeError: non-float input. ValueError: bad K, no copy asked, signs, seed/offsets.
    """
    _check_float_input(x, "quantize_row_col")
    _check_nvfp4_k(x, "quantize_row_col")
    if not (rowwise or columnwise):
        raise ValueError("quantize_row_col needs rowwise=True or columnwise=True; got both "
                         "False")
    # As in quantize_nvfp4: a bad vector is refused even with rht=False.
    signs = check_sign_vector(sign_vector)
    signs = signs if rht else None
    k = x.shape[-1]
    m = math.prod(x.shape[:-1])
    if col_offset is None:
        checks.uint64(row_offset, "row_offset")
        col_offset = checks.as_uint64(row_offset + reference.counters_used(m * k))
    for value, name in ((seed, "seed"), (row_offset, "row_offset"), (col_offset, "col_offset")):
        checks.uint64(value, name)
    impl = backends.get(backend, "quantize_row_col", x.device)
    row, col = impl(x, rht_signs=signs, rowwise=bool(rowwise), columnwise=bool(columnwise),
                    row_stochastic=bool(row_stochastic), col_stochastic=bool(col_stochastic),
                    seed=seed, row_offset=row_offset, col_offset=col_offset,
                    row_amax=_amax_tensor(row_amax, x.device),
                    col_amax=_amax_tensor(col_amax, x.device))
    m_pad = shapes.padded16(m)
    row_t = None if row is None else NVFP4Tensor(*row, (m, k))
    col_t = None if col is None else NVFP4Tensor(*col, (k, m_pad), rht_signs=signs)
    return row_t, col_t


def quantize_weight_2d(w, *, columnwise=True, stochastic=False, seed=0, offset=0, amax=None,
                       backend="auto"):
    """16x16-scaled NVFP4 of a weight ``w [N, K]`` and of ``w^T``, from one read (NUMERICS 5).

    The spec is ``lowprec.reference.quantize_weight_2d``: ``row`` equals
    ``quantize_nvfp4(w, block="16x16")``; ``col``, the quantized ``W^T`` that dgrad reads,
    has exactly the transposed codes and tile scales, so forward and backward multiply by
    one quantized W.

    Args:
        w: float32/bfloat16/float16 ``[N, K]``, N and K multiples of 16.
        columnwise: also produce the ``W^T`` copy.
        stochastic, seed, offset: SR (Philox words of the rowwise flat index).
        amax: a global amax the caller already has; measured when None.
        backend: as for ``quantize_nvfp4``.

    Returns:
        ``(row, col)``: NVFP4Tensors (block ``"16x16"``) of shapes ``[N, K]`` and ``[K, N]``;
        col is None unless ``columnwise``.

    Raises:
        TypeError: non-float input. ValueError: not 2-D, N or K not multiples of 16.
    """
    _check_float_input(w, "quantize_weight_2d")
    if w.dim() != 2 or w.shape[0] % 16 or w.shape[1] % 16:
        raise ValueError(f"quantize_weight_2d needs w [N, K] with N % 16 == 0 and "
                         f"K % 16 == 0; got shape {tuple(w.shape)}")
    checks.uint64(seed, "seed")
    checks.uint64(offset, "offset")
    impl = backends.get(backend, "quantize_weight_2d", w.device)
    row, col = impl(w, columnwise=bool(columnwise), stochastic=bool(stochastic), seed=seed,
                    offset=offset, amax=_amax_tensor(amax, w.device))
    n, k = w.shape
    row_t = NVFP4Tensor(*row, (n, k), block="16x16")
    col_t = None if col is None else NVFP4Tensor(*col, (k, n), block="16x16")
    return row_t, col_t


def dequantize_nvfp4(t, dtype=torch.float32, *, backend="auto"):
    """``e2m1(q) * s_b * S_dec`` of an NVFP4Tensor, as ``dtype``."""
    if not isinstance(t, NVFP4Tensor):
        raise TypeError(f"dequantize_nvfp4 takes an NVFP4Tensor; got {type(t).__name__}")
    check_float_dtype(dtype, "dtype")
    impl = backends.get(backend, "dequantize_nvfp4", t.device)
    return impl(t.data, t.scale, t.amax, dtype)


def quantize_fp8(x, *, backend="auto"):
    """E4M3 with one FP32 scale per row (``amax_row / 448``; a zero row has scale 1).

    Args:
        x: float32/bfloat16/float16 tensor ``[..., K]``.
    Returns:
        FP8Tensor with ``data`` float8_e4m3fn ``[..., K]`` and ``scale`` FP32 ``[..., 1]``.
    """
    _check_float_input(x, "quantize_fp8")
    impl = backends.get(backend, "quantize_fp8", x.device)
    data, scale = impl(x)
    return FP8Tensor(data, scale, x.shape)


def _check_gemm_operands(a, b, kind, bias, out_dtype):
    if not isinstance(a, kind) or not isinstance(b, kind):
        raise TypeError(f"operands must both be {kind.__name__}; got "
                        f"{type(a).__name__} and {type(b).__name__}")
    if a.device != b.device:
        raise ValueError(f"operands must be on one device; got a on {a.device}, b on "
                         f"{b.device}")
    check_float_dtype(out_dtype, "out_dtype")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be a tensor or None; got {type(bias).__name__}")
        if bias.dtype not in FLOAT_DTYPES:
            raise TypeError(f"bias must be float32, bfloat16 or float16; got {bias.dtype}")
        if bias.device != a.device:
            raise ValueError(f"bias must be on the operands' device {a.device}; got "
                             f"{bias.device}")
    if len(b.shape) != 2:
        raise ValueError(f"operand b must be 2-D [N, K]; got shape {tuple(b.shape)}")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"K mismatch: a has shape {tuple(a.shape)} (K={a.shape[-1]}), "
                         f"b has shape {tuple(b.shape)} (K={b.shape[-1]})")
    if bias is not None and tuple(bias.shape) != (b.shape[0],):
        raise ValueError(f"bias must have shape ({b.shape[0]},); got {tuple(bias.shape)}")


def nvfp4_gemm(a, b, bias=None, out_dtype=torch.bfloat16, *, backend="auto"):
    """``a @ b.T`` of two NVFP4Tensors (NUMERICS 8).

    ``alpha * sum_k deq(a)[m, k] deq(b)[n, k]`` with FP32 products and sums, alpha =
    S_dec(a) * S_dec(b) applied once to the accumulator, then ``bias``, then the cast to
    ``out_dtype``.

    Args:
        a: NVFP4Tensor ``[..., K]``; b: NVFP4Tensor ``[N, K]``; bias: ``[N]`` or None.
    Returns:
        ``[..., N]`` tensor of ``out_dtype``.
    Raises:
        ValueError: mismatched K, bias shape, or operands with different RHT signs.
    """
    _check_gemm_operands(a, b, NVFP4Tensor, bias, out_dtype)
    if a.rht_signs != b.rht_signs:
        raise ValueError(f"operands must share one RHT (or none) to multiply; got "
                         f"a.rht_signs={a.rht_signs}, b.rht_signs={b.rht_signs}")
    impl = backends.get(backend, "nvfp4_gemm", a.device)
    lead = a.shape[:-1]
    rows = math.prod(lead)          # not -1: K may be 0 (an empty contraction)
    # Autocast must not turn the FP32 accumulation of NUMERICS 8 into a bf16 matmul.
    with torch.autocast(a.device.type, enabled=False):
        out = impl(a.data.reshape(rows, a.data.shape[-1]),
                   a.scale.reshape(rows, a.scale.shape[-1]), a.amax, b.data, b.scale,
                   b.amax, bias=bias, out_dtype=out_dtype)
    return out.reshape(*lead, b.shape[0])


def fp8_gemm(a, b, bias=None, out_dtype=torch.bfloat16, *, backend="auto"):
    """``a @ b.T`` of two FP8Tensors: FP32 accumulation, row scales applied after (NUMERICS 9)."""
    _check_gemm_operands(a, b, FP8Tensor, bias, out_dtype)
    impl = backends.get(backend, "fp8_gemm", a.device)
    lead = a.shape[:-1]
    rows = math.prod(lead)          # not -1: K may be 0 (an empty contraction)
    with torch.autocast(a.device.type, enabled=False):
        out = impl(a.data.reshape(rows, a.shape[-1]), a.scale.reshape(rows, 1), b.data,
                   b.scale, bias=bias, out_dtype=out_dtype)
    return out.reshape(*lead, b.shape[0])


def available(backend=None, return_reason=False, device_type=None):
    """What runs here.

    ``available()`` lists the usable backend names; ``available("triton")`` is a bool;
    with ``return_reason=True`` the reason comes too (``(bool, reason)`` for one backend,
    ``{name: reason or None}`` for all). ``device_type`` defaults to ``"cuda"`` when a GPU
    is visible, else ``"cpu"``.
    """
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if backend is not None:
        reason = backends.reason_unavailable(backend, device_type)
        return (reason is None, reason) if return_reason else reason is None
    reasons = {name: backends.reason_unavailable(name, device_type)
               for name in backends.BACKEND_MODULES}
    if return_reason:
        return reasons
    return [name for name, reason in reasons.items() if reason is None]
