"""Pure-PyTorch executable form of docs/numerics.md (sections 2-10).

Every other backend (Triton, CUDA C++, the CPU build of the C++ math) is tested
bit for bit against the functions here, so this module is written for clarity and
for exactness, never for speed. It imports nothing but torch and lowprec's torch-free
core: the padding rule (``lowprec.shapes``), the named results every backend returns
(``lowprec.copies``) and the one check of values mode (``lowprec.checks``).

Load-bearing details (each one changes bits if "simplified"):

* All scale arithmetic is FP32, one IEEE operation at a time (no fused multiply-add):
  constants are FP32 tensors, never Python floats, so no step runs in double.
* ``s_b = e4m3_rne(min(block_amax * (S_enc * (1/6)), 448))``: ``S_enc * (1/6)`` first.
* No lower clamp on ``s_b``: a block whose scale underflows E4M3 stores 0x00, encodes
  with ``enc_b = FLT_MAX`` and dequantizes to exactly 0.
* The E4M3 cast is preceded by a clamp to 448. torch >= 2.12 saturates on its own (its
  CPU cast maps 500 and Inf to 448 on 2.13), but torch 2.11, which lowprec supports,
  returns NaN (0x7F) for |v| >= 480 and for Inf (pytorch/pytorch#178817 changed it).
* Canonical NaN: every NaN that dequantization or FP8 quantization produces is the
  positive quiet NaN of its dtype (fp32 0x7FC00000, bf16 0x7FC0, fp16 0x7E00,
  float8_e4m3fn 0x7F), whatever the sign or payload of the NaN that caused it.
* E2M1 round-to-nearest-even is a count of threshold comparisons (ties alternate
  down/up along the grid); stochastic rounding compares ``float(r >> 8)`` with
  ``p * 2^24``.
* Non-finite inputs: a computed amax that is NaN or Inf becomes NaN and every scale of
  the tensor is NaN (byte 0x7F). A block whose own amax is not finite also gets scale
  NaN. The sign bit of every code is the sign bit of ``x`` (so NaN-scaled blocks still
  have well-defined codes: magnitude 0, sign of ``x``).
* The RHT sums its 16 terms ``x_j * M[j, k]`` (exact products, ``M = diag(s) H``) as a
  balanced pairwise tree in index order, ((t0+t1)+(t2+t3))+..., which is exactly what a
  radix-2 fast Walsh-Hadamard butterfly (stage on index bit 0 first) computes; then one
  rounding to bf16. A NaN output is the bf16 pattern 0xFFFF on every device.
* Philox4x32-10 is computed in int64 with 16-bit limbs so that no product overflows.
"""

import torch

from lowprec.checks import weight_values
from lowprec.copies import FP8Copy, FP8RowCol, NVFP4Copy, RowCol
from lowprec.shapes import padded16, swizzled_scales

FLT_MAX = torch.finfo(torch.float32).max
E4M3_MAX = 448.0
E2M1_MAX = 6.0

# Magnitudes of E2M1 codes 0..7; codes 8..15 are their negatives.
E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

# TE's fixed RHT sign vector (NUMERICS 6).
DEFAULT_SIGN_VECTOR = (1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1)

E4M3_NAN_BYTE = 0x7F

# The canonical (positive quiet) NaN of each output dtype, as an integer bit pattern.
CANONICAL_NAN_BITS = {torch.float32: (torch.int32, 0x7FC00000),
                      torch.bfloat16: (torch.int16, 0x7FC0),
                      torch.float16: (torch.int16, 0x7E00),
                      torch.float8_e4m3fn: (torch.uint8, E4M3_NAN_BYTE)}

PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
MASK32 = 0xFFFFFFFF


def _f32(value):
    """An FP32 0-d constant, so that arithmetic with it stays in FP32."""
    return torch.tensor(value, dtype=torch.float32)


# ----------------------------------------------------------------------------------
# E2M1 (NUMERICS 1, 3, 4)
# ----------------------------------------------------------------------------------

def e2m1_values(codes):
    """FP32 value of each E2M1 code (uint8 0..15)."""
    grid = torch.tensor(E2M1_GRID + tuple(-g for g in E2M1_GRID), dtype=torch.float32,
                        device=codes.device)
    return grid[codes.long()]


def _sign_bits(x):
    """Bit 3 set where the sign bit of ``x`` is set (-0.0 and negative NaN included)."""
    return torch.signbit(x).to(torch.uint8) << 3


def e2m1_magnitude_rne(a):
    """Magnitude code (0..7) of the FP32 magnitude ``a`` rounded to nearest even.

    Each threshold is a midpoint of the grid; ``>=`` where the tie goes up (to the
    even code above), ``>`` where it goes down. NaN compares false everywhere: code 0.
    """
    code = torch.zeros(a.shape, dtype=torch.uint8, device=a.device)
    for mid, tie_up in ((0.25, False), (0.75, True), (1.25, False), (1.75, True),
                        (2.5, False), (3.5, True), (5.0, False)):
        code += (a >= mid) if tie_up else (a > mid)
    return code


def e2m1_round_rne(v, sign_source=None):
    """E2M1 codes of the FP32 tensor ``v`` (RNE, saturating at 6).

    The sign bit comes from ``sign_source`` (default ``v``); the quantizer passes
    the unscaled input so that a NaN-scaled block keeps the sign of its input.
    """
    sign_source = v if sign_source is None else sign_source
    return e2m1_magnitude_rne(v.abs()) | _sign_bits(sign_source)


def _e2m1_magnitude_floor(a):
    """Largest grid magnitude code whose value is <= a (NaN gives 0)."""
    code = torch.zeros(a.shape, dtype=torch.uint8, device=a.device)
    for step in E2M1_GRID[1:]:
        code += a >= step
    return code


def e2m1_round_stochastic(v, random_words, sign_source=None):
    """E2M1 codes of ``v`` rounded stochastically (NUMERICS 4).

    ``random_words`` holds one uint32 (as int64) per element of ``v``.
    """
    sign_source = v if sign_source is None else sign_source
    a = torch.clamp(v.abs(), max=E2M1_MAX)
    lo_code = _e2m1_magnitude_floor(a)
    grid = torch.tensor(E2M1_GRID + (E2M1_MAX,), dtype=torch.float32, device=v.device)
    lo = grid[lo_code.long()]
    hi = grid[lo_code.long() + 1]
    # hi - lo is a power of two, so p is exact; at a == 6, lo == hi == 6 and p := 0.
    p = torch.where(hi > lo, (a - lo) / (hi - lo), _f32(0.0))
    threshold = p * _f32(2.0 ** 24)
    draw = (random_words >> 8).to(torch.float32)
    round_up = (draw < threshold) & (lo_code < 7)
    return (lo_code + round_up.to(torch.uint8)) | _sign_bits(sign_source)


# ----------------------------------------------------------------------------------
# E4M3 (NUMERICS 1, 2, 9)
# ----------------------------------------------------------------------------------

def canonical_nan(dtype, device=None):
    """A 0-d tensor of ``dtype`` holding its canonical NaN (``CANONICAL_NAN_BITS``)."""
    int_dtype, bits = CANONICAL_NAN_BITS[dtype]
    return torch.tensor(bits, dtype=int_dtype, device=device).view(dtype)


def canonicalize_nan(t):
    """``t`` with every NaN replaced by the canonical NaN of its dtype."""
    return torch.where(torch.isnan(t), canonical_nan(t.dtype, t.device), t)


def e4m3_round(v):
    """FP32 -> float8_e4m3fn with RNE, saturating at +-448; NaN becomes 0x7F.

    The clamp comes first because torch 2.11's cast does not saturate (see the module
    docstring); a NaN passes the clamp and is pinned to the canonical byte.
    """
    return canonicalize_nan(torch.clamp(v, min=-E4M3_MAX, max=E4M3_MAX).to(torch.float8_e4m3fn))


# ----------------------------------------------------------------------------------
# Scale chain (NUMERICS 2)
# ----------------------------------------------------------------------------------

def tensor_amax(x):
    """max |x| in FP32, NaN if any element is NaN or Inf (NUMERICS 2)."""
    if x.numel() == 0:
        return torch.zeros((), dtype=torch.float32, device=x.device)
    amax = x.detach().abs().amax().to(torch.float32)   # amax propagates NaN
    return torch.where(torch.isfinite(amax), amax, _f32(float("nan")))


def global_encode_scale(amax):
    """S_enc = min(2688 / amax, FLT_MAX); 1 where amax == 0 or S_enc == 0; NaN stays NaN."""
    amax = amax.to(torch.float32)
    s_enc = torch.clamp(_f32(E2M1_MAX * E4M3_MAX) / amax, max=FLT_MAX)
    return torch.where((amax == 0) | (s_enc == 0), _f32(1.0), s_enc)


def global_decode_scale(amax):
    """S_dec = 1 / S_enc."""
    return _f32(1.0) / global_encode_scale(amax)


def block_scales(block_amax, s_enc):
    """s_b = e4m3_rne(min(block_amax * (S_enc * (1/6)), 448)); non-finite -> NaN."""
    block_amax = torch.where(torch.isfinite(block_amax), block_amax, _f32(float("nan")))
    return e4m3_round(block_amax * (s_enc * _f32(1.0 / 6.0)))


def block_encode_scales(scales, s_enc):
    """enc_b = min(1 / (f32(s_b) * S_dec), FLT_MAX)."""
    s_dec = _f32(1.0) / s_enc
    return torch.clamp(_f32(1.0) / (scales.to(torch.float32) * s_dec), max=FLT_MAX)


# ----------------------------------------------------------------------------------
# Philox4x32-10 (NUMERICS 4.1)
# ----------------------------------------------------------------------------------

def _mulhilo32(a, b):
    """(hi, lo) 32-bit halves of the 64-bit product of constant ``a`` and tensor ``b``.

    Split ``b`` into 16-bit limbs so every partial product stays below 2^48.
    """
    b_lo, b_hi = b & 0xFFFF, b >> 16
    low_part = a * b_lo                      # < 2^48
    high_part = a * b_hi                     # < 2^48, weight 2^16
    total_lo = (low_part & MASK32) + ((high_part & 0xFFFF) << 16)
    lo = total_lo & MASK32
    hi = ((low_part >> 32) + (high_part >> 16) + (total_lo >> 32)) & MASK32
    return hi, lo


def philox4x32_10(seed, counter_lo, counter_hi):
    """The four Philox4x32-10 words for each counter ``(lo, hi, 0, 0)``.

    ``seed`` is a Python int in [0, 2^64); counters are int64 tensors holding uint32.
    Returns an int64 tensor ``[..., 4]`` of uint32 values. Same as ``tl.randint4x``.
    """
    k0 = seed & MASK32
    k1 = (seed >> 32) & MASK32
    c0 = counter_lo.to(torch.int64)
    c1 = counter_hi.to(torch.int64)
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(10):
        hi_b, lo_b = _mulhilo32(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mulhilo32(PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + PHILOX_KEY_A) & MASK32
        k1 = (k1 + PHILOX_KEY_B) & MASK32
    return torch.stack((c0, c1, c2, c3), dim=-1)


def random_words(seed, offset, numel, device=None):
    """The uint32 words (int64) that SR uses for flat elements 0..numel-1.

    Element ``i`` uses counter ``offset + (i >> 2)`` (64-bit, wrapping) and word ``i & 3``.
    """
    n_counters = (numel + 3) // 4
    j = torch.arange(n_counters, dtype=torch.int64, device=device)
    low_sum = (offset & MASK32) + j
    counter_lo = low_sum & MASK32
    counter_hi = (((offset >> 32) & MASK32) + (low_sum >> 32)) & MASK32
    return philox4x32_10(seed, counter_lo, counter_hi).reshape(-1)[:numel]


def counters_used(numel):
    """Philox counters one SR quantization of ``numel`` elements consumes."""
    return (numel + 3) // 4


# ----------------------------------------------------------------------------------
# Random Hadamard transform (NUMERICS 6)
# ----------------------------------------------------------------------------------

def hadamard_matrix(device=None):
    """16x16 Sylvester Hadamard matrix times 1/4, FP32."""
    h = torch.ones(1, 1, device=device)
    for _ in range(4):
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h * 0.25


def rht_matrix(sign_vector=DEFAULT_SIGN_VECTOR, device=None):
    """diag(s) @ H, entries +-0.25 (exact)."""
    signs = torch.as_tensor(sign_vector, dtype=torch.float32, device=device)
    return signs[:, None] * hadamard_matrix(device)


def rht(x, sign_vector=DEFAULT_SIGN_VECTOR):
    """bf16_rne(x.reshape(-1, 16) @ (diag(s) H)) along the last dim, FP32 pairwise sums."""
    m = rht_matrix(sign_vector, x.device)
    chunks = x.to(torch.float32).reshape(-1, 16)
    terms = chunks[:, :, None] * m[None, :, :]          # [n, j, k], exact products
    while terms.shape[1] > 1:                            # balanced tree over j
        terms = terms[:, 0::2, :] + terms[:, 1::2, :]
    out = terms[:, 0, :].reshape(x.shape).to(torch.bfloat16)
    # The sign of a NaN made by the sums differs between torch's CPU and CUDA paths; pin
    # it to 0xFFFF so the reference gives the same bits on every device.
    nan = torch.tensor(-1, dtype=torch.int16, device=x.device).view(torch.bfloat16)
    return torch.where(torch.isnan(out), nan, out)


# ----------------------------------------------------------------------------------
# NVFP4 quantization (NUMERICS 2-6)
# ----------------------------------------------------------------------------------

def pack_codes(codes):
    """[..., K] codes 0..15 -> [..., K/2] bytes, even element in the low nibble."""
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_codes(data):
    """[..., K/2] bytes -> [..., K] codes."""
    low, high = data & 0x0F, data >> 4
    return torch.stack((low, high), dim=-1).reshape(*data.shape[:-1], data.shape[-1] * 2)


def _block_amax_1x16(x):
    """[..., K] -> [..., K/16] NaN-propagating max |x| per block."""
    return x.abs().reshape(*x.shape[:-1], x.shape[-1] // 16, 16).amax(dim=-1)


def _block_amax_16x16(x):
    """[..., R, K] -> [..., R, K/16]: each 16x16 tile's max |x|, repeated for its 16 rows."""
    *lead, rows, cols = x.shape
    tiles = x.abs().reshape(*lead, rows // 16, 16, cols // 16, 16)
    tile_amax = tiles.amax(dim=(-3, -1))                 # [..., R/16, K/16]
    return tile_amax.repeat_interleave(16, dim=-2)


def quantize_nvfp4(x, *, block="1x16", rht_signs=None, stochastic=False, seed=0,
                   offset=0, amax=None):
    """NVFP4-quantize ``x`` along its last dim. Inputs are assumed already validated.

    Args:
        x: float tensor ``[..., K]``, K % 16 == 0 (``[..., R, K]`` with R % 16 == 0 for
            ``block="16x16"``).
        block: ``"1x16"`` or ``"16x16"`` (2-D tiles, scale repeated per row).
        rht_signs: None for no RHT, else the 16 signs of the RHT applied first.
        stochastic, seed, offset: SR with Philox words from ``(seed, offset)``.
        amax: FP32 global amax the caller already has (of the RHT'd tensor if RHT).

    Returns:
        NVFP4Copy (data uint8 [..., K/2], scale float8_e4m3fn [..., K/16], amax FP32 0-d)
    """
    if rht_signs is not None:
        x = rht(x, rht_signs)
    x = x.to(torch.float32)
    if amax is None:
        amax = tensor_amax(x)
    else:
        amax = amax.to(device=x.device, dtype=torch.float32).reshape(())
        amax = torch.where(torch.isfinite(amax), amax, _f32(float("nan")))
    s_enc = global_encode_scale(amax)
    if x.numel() == 0:
        shape = x.shape[:-1]
        return NVFP4Copy(
            torch.empty(*shape, x.shape[-1] // 2, dtype=torch.uint8, device=x.device),
            torch.empty(*shape, x.shape[-1] // 16, dtype=torch.float8_e4m3fn,
                        device=x.device), amax)
    block_amax = _block_amax_16x16(x) if block == "16x16" else _block_amax_1x16(x)
    scales = block_scales(block_amax, s_enc)
    enc = block_encode_scales(scales, s_enc).repeat_interleave(16, dim=-1)
    v = x * enc
    if stochastic:
        words = random_words(seed, offset, x.numel(), x.device).reshape(x.shape)
        codes = e2m1_round_stochastic(v, words, sign_source=x)
    else:
        codes = e2m1_round_rne(v, sign_source=x)
    return NVFP4Copy(pack_codes(codes), scales, amax)


def pad_rows16(x2d):
    """[M, K] -> [M_pad, K] with zero rows, M_pad = padded16(M) (NUMERICS 10)."""
    m = x2d.shape[0]
    return torch.cat((x2d, x2d.new_zeros(padded16(m) - m, x2d.shape[1])), dim=0)


def quantize_row_col(x, *, rht_signs=None, rowwise=True, columnwise=True,
                     row_stochastic=False, col_stochastic=False, seed=0, row_offset=0,
                     col_offset=0, row_amax=None, col_amax=None, row_values=False,
                     col_values=False):
    """The two NVFP4 copies of an activation or gradient ``x [..., K]`` (seen as [M, K]).

    The spec of the fused row+col kernels, as two plain quantizations:

    * rowwise: ``quantize_nvfp4(x2d, stochastic=row_stochastic, seed=seed,
      offset=row_offset, amax=row_amax)``: data ``[M, K/2]``, scale ``[M, K/16]``;
    * columnwise: ``quantize_nvfp4(pad_rows16(x2d).T, rht_signs=rht_signs,
      stochastic=col_stochastic, seed=seed, offset=col_offset, amax=col_amax)``: data
      ``[K, M_pad/2]``, scale ``[K, M_pad/16]`` (the SR index is that of the ``[K, M_pad]``
      copy; the RHT runs along M).

    Returns ``RowCol(rowwise, columnwise)``, each an ``NVFP4Copy`` or None if not asked for.
    With ``row_values`` / ``col_values`` that copy is ``as_values`` of its triple:
    ``(values bf16 [M, K]
    or [K, M_pad], empty float8_e4m3fn [0], amax)``.
    """
    x2d = x.reshape(-1, x.shape[-1])
    row = col = None
    if rowwise:
        row = quantize_nvfp4(x2d, stochastic=row_stochastic, seed=seed, offset=row_offset,
                             amax=row_amax)
    if columnwise:
        col = quantize_nvfp4(pad_rows16(x2d).t().contiguous(), rht_signs=rht_signs,
                             stochastic=col_stochastic, seed=seed, offset=col_offset,
                             amax=col_amax)
    if row_values and row is not None:
        row = as_values(row)
    if col_values and col is not None:
        col = as_values(col)
    return RowCol(row, col)


def quantize_weight_2d(w, *, columnwise=True, stochastic=False, seed=0, offset=0, amax=None,
                       values=False):
    """16x16-scaled NVFP4 of a weight ``w [N, K]`` and of ``w^T`` (NUMERICS 5).

    ``row`` is ``quantize_nvfp4(w, block="16x16", ...)``. ``col`` is the quantized ``W^T``
    (codes ``[K, N/2]``, scales ``[K, N/16]``, the same amax): its codes and tile scales
    are the transpose of ``row``'s, so fprop and dgrad multiply by one quantized W (with
    SR too: it is not a second draw). Returns ``RowCol(row, col)``; col is None unless
    asked.

    ``values=True`` (needs ``columnwise=False``; W^T's values are the transpose): ``row``
    is ``as_values`` of the packed row, ``(values bf16 [N, K], empty e4m3 [0], amax)``.
    """
    weight_values(columnwise, values)
    if values:
        row, _ = quantize_weight_2d(w, columnwise=False, stochastic=stochastic, seed=seed,
                                    offset=offset, amax=amax)
        return RowCol(as_values(row), None)
    row = quantize_nvfp4(w, block="16x16", stochastic=stochastic, seed=seed, offset=offset,
                         amax=amax)
    if not columnwise:
        return RowCol(row, None)
    data, scale, amax_out = row
    col_data = pack_codes(unpack_codes(data).t().contiguous())
    # row's scale holds each tile's scale on its 16 rows; W^T holds it on its 16 columns'
    # rows, i.e. the tile grid transposed and repeated along the new rows.
    tile_scales = scale[0::16, :]                                    # [N/16, K/16]
    col_scale = tile_scales.t().repeat_interleave(16, dim=0).contiguous()
    return RowCol(row, NVFP4Copy(col_data, col_scale, amax_out))


def as_values(triple):
    """The values-mode form of a packed ``(data, scale, amax)``: ``(values, empty, amax)``
    with ``values`` = ``e2m1(q) * s_b`` in bf16 (exact, no global scale, every NaN the
    canonical one) and ``empty`` a 0-element float8_e4m3fn tensor (NUMERICS 8: what the
    emulated GEMM multiplies)."""
    data, scale, amax = triple
    values = canonicalize_nan(block_dequantize_nvfp4(data, scale).to(torch.bfloat16))
    return NVFP4Copy(values, scale.new_empty((0,)), amax)


def dequantize_nvfp4(data, scale, amax, dtype=torch.float32):
    """x_hat = e2m1_value(q) * f32(s_b) * S_dec, then cast to ``dtype``."""
    return apply_global_decode_scale(block_dequantize_nvfp4(data, scale), amax, dtype)


def apply_global_decode_scale(values, amax, dtype):
    """``values * S_dec`` (FP32) cast to ``dtype``, every NaN the canonical one."""
    return canonicalize_nan((values * global_decode_scale(amax)).to(dtype))


def block_dequantize_nvfp4(data, scale):
    """e2m1_value(q) * f32(s_b) in FP32 (exact: at most 6 significant bits)."""
    values = e2m1_values(unpack_codes(data))
    return values * scale.to(torch.float32).repeat_interleave(16, dim=-1)


# ----------------------------------------------------------------------------------
# GEMMs (NUMERICS 8, 9)
# ----------------------------------------------------------------------------------

def nvfp4_gemm(a_data, a_scale, a_amax, b_data, b_scale, b_amax, bias=None,
               out_dtype=torch.bfloat16):
    """alpha * deq(A) @ deq(B)^T with FP32 products and sums, alpha applied once, + bias."""
    a = block_dequantize_nvfp4(a_data, a_scale)
    b = block_dequantize_nvfp4(b_data, b_scale)
    alpha = global_decode_scale(a_amax) * global_decode_scale(b_amax)
    out = (a @ b.transpose(-1, -2)) * alpha
    if bias is not None:
        out = out + bias.to(torch.float32)
    return out.to(out_dtype)


def quantize_fp8_rowwise(x):
    """E4M3 with one FP32 scale per row: scale = amax_row / 448 (zero row: 1).

    Returns FP8Copy (data float8_e4m3fn [..., K], scale FP32 [..., 1]).
    """
    x = x.to(torch.float32)
    if x.numel() == 0:
        return FP8Copy(x.to(torch.float8_e4m3fn),
                       torch.ones(*x.shape[:-1], 1, device=x.device))
    row_amax = x.abs().amax(dim=-1, keepdim=True)
    scale = row_amax / _f32(E4M3_MAX)
    scale = canonicalize_nan(torch.where(row_amax == 0, _f32(1.0), scale))
    return FP8Copy(e4m3_round(x / scale), scale)


def quantize_fp8_row_col(x):
    """Both FP8 layouts of a 2-D ``x [M, K]``: x per row along K and x^T per row along M
    (x per column), each ``quantize_fp8_rowwise``.

    Returns FP8RowCol (rowwise_data [M, K], rowwise_scale [M, 1], columnwise_data [K, M],
    columnwise_scale [K, 1]).
    """
    return FP8RowCol(*quantize_fp8_rowwise(x), *quantize_fp8_rowwise(x.t().contiguous()))


def dequantize_fp8(data, scale, dtype=torch.float32):
    return (data.to(torch.float32) * scale).to(dtype)


def fp8_gemm(a_data, a_scale, b_data, b_scale, bias=None, out_dtype=torch.bfloat16):
    """(qA @ qB^T in FP32) * scale_a * scale_b^T, + bias; the semantics of _scaled_mm."""
    acc = a_data.to(torch.float32) @ b_data.to(torch.float32).transpose(-1, -2)
    out = acc * a_scale * b_scale.transpose(-1, -2)
    if bias is not None:
        out = out + bias.to(torch.float32)
    return out.to(out_dtype)


# ----------------------------------------------------------------------------------
# Swizzled (blocked) scale layout for the Blackwell GEMM (NUMERICS 8)
# ----------------------------------------------------------------------------------

def _swizzle_index(rows, cols, device=None):
    """Flat position in the swizzled buffer of each (r, c) of a padded [rows, cols]."""
    r = torch.arange(rows, device=device)[:, None]
    c = torch.arange(cols, device=device)[None, :]
    tile = (r // 128) * (cols // 4) + (c // 4)
    within = (r % 32) * 16 + ((r % 128) // 32) * 4 + (c % 4)
    return tile * 512 + within


def swizzle_scales(scale):
    """[R, C] scales -> flat blocked layout, rows padded to 128 and cols to 4 with zeros."""
    rows, cols = scale.shape
    padded_rows, padded_cols = swizzled_scales(rows, cols)
    raw = scale.view(torch.uint8)
    padded = torch.zeros(padded_rows, padded_cols, dtype=torch.uint8, device=scale.device)
    padded[:rows, :cols] = raw
    out = torch.zeros(padded_rows * padded_cols, dtype=torch.uint8, device=scale.device)
    index = _swizzle_index(padded_rows, padded_cols, scale.device)
    out[index.reshape(-1)] = padded.reshape(-1)
    return out.view(scale.dtype)


def unswizzle_scales(swizzled, rows, cols):
    """Inverse of ``swizzle_scales``: the [rows, cols] scales."""
    padded_rows, padded_cols = swizzled_scales(rows, cols)
    raw = swizzled.view(torch.uint8)
    padded = raw[_swizzle_index(padded_rows, padded_cols, swizzled.device)]
    return padded[:rows, :cols].contiguous().view(swizzled.dtype)
