"""The one place that loads the compiled extension ``lowprec._lowprec_C`` (csrc/).

Importing this module never raises for a missing or broken build: ``REASON`` is None
when the extension loaded, else a sentence saying why it did not, which the ``cpu`` and
``cuda`` backends hand to ``lowprec.available(return_reason=True)``. ``lowprec`` itself
never imports this module at top level; the backends import it when first asked.

``LOWPREC_NO_EXT=1`` in the environment disables compiled code at build time (setup.py)
and at run time (here), so one switch gives a pure-Python lowprec.

The functions below translate the Python API's arguments into the op schemas of
csrc/bindings.cpp (an RHT sign vector becomes a 16-bit mask, uint64 seeds and offsets
travel as int64) and register the fake (meta) kernels ``torch.compile`` traces with.
"""

import importlib
import os

import torch

from lowprec import checks

EXTENSION = "lowprec._lowprec_C"
UINT64_SPAN = 1 << 64


def _load():
    """None if the extension loaded and registered its ops, else why not."""
    if os.environ.get("LOWPREC_NO_EXT") == "1":
        return "LOWPREC_NO_EXT=1 is set: compiled code is disabled"
    try:
        importlib.import_module(EXTENSION)
    except ModuleNotFoundError as err:
        if err.name != EXTENSION:
            return f"the compiled extension {EXTENSION} failed to import: {err}"
        return (f"the compiled extension {EXTENSION} is not built (installed with "
                "LOWPREC_NO_EXT=1, or its optional build failed; rebuild with "
                "`pip install -v --no-build-isolation -e .` and read the 'lowprec setup' "
                "lines)")
    except Exception as err:  # undefined symbols, a torch ABI mismatch, ...
        return (f"the compiled extension {EXTENSION} failed to load "
                f"({type(err).__name__}: {err}); rebuild it against the installed "
                f"torch {torch.__version__}")
    try:
        _register_fakes()
    except Exception as err:  # e.g. an extension built from older sources lacks an op
        return (f"the compiled extension {EXTENSION} does not match lowprec's Python code "
                f"({type(err).__name__}: {err}); rebuild it with "
                "`pip install --no-build-isolation -e .`")
    return None


def _register_fakes():
    """Shapes and dtypes of every op's outputs, for FakeTensor tracing (torch.compile)."""

    def nvfp4_outputs(x, rows_shape, k):
        return (x.new_empty((*rows_shape, k // 2), dtype=torch.uint8),
                x.new_empty((*rows_shape, k // 16), dtype=torch.float8_e4m3fn),
                x.new_empty((), dtype=torch.float32))

    @torch.library.register_fake("lowprec_C::quantize_nvfp4")
    def _(x, block_rows, rht_mask, stochastic, seed, offset, amax):
        return nvfp4_outputs(x, x.shape[:-1], x.shape[-1])

    def absent(x):
        return (x.new_empty((0,), dtype=torch.uint8),
                x.new_empty((0,), dtype=torch.float8_e4m3fn),
                x.new_empty((), dtype=torch.float32))

    @torch.library.register_fake("lowprec_C::quantize_nvfp4_rowcol")
    def _(x, rht_mask, rowwise, columnwise, row_stochastic, col_stochastic, seed, row_offset,
          col_offset, row_amax, col_amax):
        k = x.shape[-1]
        m = 1
        for size in x.shape[:-1]:
            m = m * size
        m_pad = (m + 15) // 16 * 16
        row = nvfp4_outputs(x, x.shape[:-1], k) if rowwise else absent(x)
        col = nvfp4_outputs(x, (k,), m_pad) if columnwise else absent(x)
        return row + col

    @torch.library.register_fake("lowprec_C::quantize_nvfp4_2d")
    def _(w, columnwise, stochastic, seed, offset, amax):
        n, k = w.shape
        col = nvfp4_outputs(w, (k,), n) if columnwise else absent(w)
        return nvfp4_outputs(w, (n,), k) + col

    @torch.library.register_fake("lowprec_C::block_dequantize_nvfp4")
    def _(data, scale):
        return data.new_empty((*data.shape[:-1], data.shape[-1] * 2), dtype=torch.float32)

    @torch.library.register_fake("lowprec_C::quantize_fp8_rowwise")
    def _(x):
        return (x.new_empty(x.shape, dtype=torch.float8_e4m3fn),
                x.new_empty((*x.shape[:-1], 1), dtype=torch.float32))


REASON = _load()


def cuda_reason():
    """None if the CUDA kernels can run here, else why not."""
    if REASON is not None:
        return REASON
    if not torch._C._dispatch_has_kernel_for_dispatch_key("lowprec_C::quantize_nvfp4", "CUDA"):
        return (f"{EXTENSION} was built without CUDA kernels (torch had no CUDA, or nvcc "
                "was missing, when it was built)")
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    major, minor = torch.cuda.get_device_capability()
    if major < 9:
        return (f"the CUDA kernels are built for sm_90a, sm_100a and compute_90 PTX; this "
                f"GPU is sm_{major}{minor}")
    return None


# ----------------------------------------------------------------------------------
# Argument translation (Python API -> op schema)
# ----------------------------------------------------------------------------------

def sign_mask(rht_signs):
    """-1 for no RHT, else the 16-bit mask with bit j set where sign j is -1."""
    if rht_signs is None:
        return -1
    return sum(1 << j for j, s in enumerate(rht_signs) if s == -1)


def as_int64(value):
    """A uint64 (seed, offset) as the int64 with the same bits."""
    value = int(value) % UINT64_SPAN
    return value - UINT64_SPAN if value >= UINT64_SPAN // 2 else value


def _amax_or_none(amax, device):
    if amax is None:
        return None
    return torch.as_tensor(amax, dtype=torch.float32, device=device).reshape(())


def _check_seed(name, value):
    if value is not None and not 0 <= int(value) < UINT64_SPAN:
        raise ValueError(f"{name} must be in [0, 2**64); got {value}")


def _check_signs(rht_signs):
    return None if rht_signs is None else list(checks.sign_vector(rht_signs, "rht_signs"))


def _check_float(x, what):
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float32, torch.bfloat16,
                                                          torch.float16):
        raise TypeError(f"{what} must be a float32/bfloat16/float16 tensor; got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")


def counters_used(m, k):
    """Philox counters consumed by SR of the (rowwise, columnwise) copies of an [m, k] x."""
    m_pad = -(-m // 16) * 16
    return -(-m * k // 4), k * m_pad // 4


def quantize_nvfp4(x, *, block="1x16", rht_signs=None, stochastic=False, seed=0, offset=0,
                   amax=None):
    """Same contract as ``lowprec.reference.quantize_nvfp4`` (inputs validated by ops.py)."""
    data, scale, amax_out = torch.ops.lowprec_C.quantize_nvfp4(
        x.detach(), 16 if block == "16x16" else 1, sign_mask(rht_signs), bool(stochastic),
        as_int64(seed), as_int64(offset), amax)
    return data, scale, amax_out


def quantize_rowwise_and_columnwise(x, *, rht_signs=None, row_stochastic=False,
                                    col_stochastic=False, seed=0, row_offset=0,
                                    col_offset=None, row_amax=None, col_amax=None,
                                    rowwise=True, columnwise=True):
    """Rowwise and columnwise NVFP4 copies of ``x`` from one read (the CUDA kernel) or
    two loops (CPU); the same signature as ``lowprec.kernels.backend``'s.

    ``x`` is ``[..., K]`` with K % 16 == 0, seen as ``[M, K]``. Bit for bit:

    * rowwise: ``reference.quantize_nvfp4(x, stochastic=row_stochastic, seed=seed,
      offset=row_offset, amax=row_amax)``;
    * columnwise: ``reference.quantize_nvfp4(xt, rht_signs=rht_signs,
      stochastic=col_stochastic, seed=seed, offset=col_offset, amax=col_amax)`` where
      ``xt`` is the ``[K, M_pad]`` transpose of ``x`` zero-padded to a multiple of 16 rows
      (NUMERICS 10).

    ``col_offset`` defaults to ``row_offset + counters_used(M, K)[0]`` (mod 2^64), so the
    copies never share random words. Returns ``(row, col)``, each a ``(data, scale,
    amax)`` triple, or None for a copy not asked for.
    """
    _check_float(x, "x")
    if x.dim() < 1 or x.shape[-1] % 16 != 0:
        raise ValueError(f"nvfp4 needs the last dim K % 16 == 0; got shape {tuple(x.shape)}")
    signs = _check_signs(rht_signs)
    for name, value in (("seed", seed), ("row_offset", row_offset), ("col_offset", col_offset)):
        _check_seed(name, value)
    m = 1
    for size in x.shape[:-1]:
        m *= size
    if col_offset is None:
        col_offset = (int(row_offset) + counters_used(m, x.shape[-1])[0]) % UINT64_SPAN
    out = torch.ops.lowprec_C.quantize_nvfp4_rowcol(
        x.detach(), sign_mask(signs), bool(rowwise), bool(columnwise), bool(row_stochastic),
        bool(col_stochastic), as_int64(seed), as_int64(row_offset), as_int64(col_offset),
        _amax_or_none(row_amax, x.device), _amax_or_none(col_amax, x.device))
    return (tuple(out[:3]) if rowwise else None), (tuple(out[3:]) if columnwise else None)


def quantize_weight_2d(w, *, columnwise=True, stochastic=False, seed=0, offset=0, amax=None):
    """16x16-scaled NVFP4 of a weight ``w [N, K]`` (N, K multiples of 16) from one read;
    the same signature as ``lowprec.kernels.backend``'s.

    Returns ``(row, col)``: ``row`` equals ``reference.quantize_nvfp4(w, block="16x16",
    stochastic=stochastic, seed=seed, offset=offset, amax=amax)``; ``col`` (codes
    ``[K, N/2]``, scales ``[K, N/16]``, the same amax) is the quantized ``W^T`` whose codes
    and scales are exactly the transpose of ``row``'s (NUMERICS 5), or None.
    """
    _check_float(w, "w")
    if w.dim() != 2 or w.shape[0] % 16 or w.shape[1] % 16:
        raise ValueError(f"2-D weight quantization needs [N, K] with N % 16 == 0 and "
                         f"K % 16 == 0; got shape {tuple(w.shape)}")
    _check_seed("seed", seed)
    _check_seed("offset", offset)
    out = torch.ops.lowprec_C.quantize_nvfp4_2d(
        w.detach(), bool(columnwise), bool(stochastic), as_int64(seed), as_int64(offset),
        _amax_or_none(amax, w.device))
    return tuple(out[:3]), (tuple(out[3:]) if columnwise else None)


def block_dequantize_nvfp4(data, scale):
    return torch.ops.lowprec_C.block_dequantize_nvfp4(data, scale)


def quantize_fp8(x):
    data, scale = torch.ops.lowprec_C.quantize_fp8_rowwise(x.detach())
    return data, scale
