"""Element math shared by the Triton kernels: NUMERICS 2-6 in integer and FP32 arithmetic.

Every rounding here is done with integer bit manipulation or with FP32 operations whose
result is exact or correctly rounded, never with ``.to(tl.float8e4nv)`` or
``.to(tl.bfloat16)``: Triton's CPU interpreter mis-rounds those casts (and Hopper has no
FP4 convert instruction anyway), so the same code is bit-exact in the interpreter and on
the GPU. The one exception is ``to_bf16(..., HW_BF16=True)`` in compiled kernels, where
the GPU's round-to-nearest-even convert gives the same bits faster. The Python reference
(``lowprec.reference``) is the spec; each helper names the reference function whose bits
it reproduces. Several tricks rely on IEEE subnormals: kernels are compiled without
flush-to-zero and without FMA contraction (``config.launch_options``; kernels/aot.py
checks the PTX).

Conventions:
* ``*_bits`` values are int32 views of FP32 numbers. For a non-negative float the integer
  order of its bits is the float order, and NaN bit patterns sit above +Inf. So an integer
  max over ``|x|`` bits is a max-reduction that propagates NaN (``tl.max`` on floats drops
  it), and ``bits >= 0x7F800000`` means "not finite".
* Codes are int32 tensors 0..15 (bit 3 = sign) until they are packed.
"""

import triton
import triton.language as tl

FLT_MAX = tl.constexpr(3.4028234663852886e38)
INF_BITS = tl.constexpr(0x7F800000)
QNAN_BITS = tl.constexpr(0x7FC00000)        # the canonical fp32 NaN (reference.CANONICAL_NAN_BITS)
F16_QNAN_BITS = tl.constexpr(0x7E00)         # the canonical fp16 NaN
RHT_NAN_BITS = tl.constexpr(-65536)          # 0xFFFF0000: the bf16 NaN 0xFFFF every RHT NaN becomes
E4M3_NAN_BYTE = tl.constexpr(0x7F)
# float32(1/6): the reference multiplies S_enc by this FP32 constant (NUMERICS 2).
ONE_SIXTH = tl.constexpr(0.1666666716337204)
# Input kinds: kernels read bf16/fp16 tensors as int16 bits and widen them by hand,
# because the interpreter's bf16 -> fp32 cast flushes subnormals.
KIND_F32 = tl.constexpr(0)
KIND_BF16 = tl.constexpr(1)
KIND_F16 = tl.constexpr(2)


# ----------------------------------------------------------------------------------
# Loads and small conversions
# ----------------------------------------------------------------------------------

@triton.jit
def offsets_2d(rows, cols, stride_r, stride_c):
    """Element offsets of a [rows, cols] tile, in 64 bits (tensors may pass 2^31 elements)."""
    return rows[:, None].to(tl.int64) * stride_r + cols[None, :].to(tl.int64) * stride_c


@triton.jit
def load_f32(ptrs, mask, KIND: tl.constexpr):
    """Load fp32 / bf16 bits / fp16 bits and widen exactly to fp32 (masked lanes are +0)."""
    if KIND == KIND_F32:
        return tl.load(ptrs, mask=mask, other=0.0)
    h = tl.load(ptrs, mask=mask, other=0).to(tl.int32) & 0xFFFF
    if KIND == KIND_BF16:
        return (h << 16).to(tl.float32, bitcast=True)      # bf16 is the top half of fp32
    sign = (h & 0x8000) << 16
    exp = (h >> 10) & 0x1F
    man = h & 0x3FF
    normal = (sign | ((exp + 112) << 23) | (man << 13)).to(tl.float32, bitcast=True)
    special = (sign | INF_BITS | (man << 13)).to(tl.float32, bitcast=True)   # Inf / NaN
    tiny = man.to(tl.float32) * 5.960464477539063e-08                         # man * 2^-24
    tiny = (tiny.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)  # -0 kept
    return tl.where(exp == 0, tiny, tl.where(exp == 31, special, normal))


@triton.jit
def with_sign_of(magnitude, bits):
    """``magnitude`` (sign bit clear) with the sign bit of the int32 ``bits``.

    Never ``-x``: compiled Triton lowers unary minus to ``0 - x``, which turns -0.0 into
    +0.0 (and so does its interpreter up to 3.6), where the formats keep the zero's sign.
    """
    sign = bits & -2147483648                                          # 0x80000000
    return (magnitude.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)


@triton.jit
def nan_f32():
    return tl.full([], QNAN_BITS, tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def abs_bits(x):
    """int32 bits of |x| (see the module docstring for why reductions use these)."""
    return x.to(tl.int32, bitcast=True) & 0x7FFFFFFF


@triton.jit
def sign_code(x):
    """Bit 3 set where the sign bit of x is set (-0.0 and negative NaN included)."""
    return (x.to(tl.int32, bitcast=True) >> 28) & 8


@triton.jit
def round_to_bf16(v):
    """fp32 -> bf16 round-to-nearest-even, returned widened back to fp32 (exact).

    NaN keeps its sign and becomes quiet (callers that need one NaN pin it: ``to_bf16``
    for the RHT, the dequantizer for its output).
    """
    bits = v.to(tl.int32, bitcast=True)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
    is_nan = (bits & 0x7FFFFFFF) > INF_BITS
    out = tl.where(is_nan, (bits | 0x400000) & -65536, rounded)
    return out.to(tl.float32, bitcast=True)


@triton.jit
def bf16_bits(v):
    """fp32 -> bf16 RNE as int32 holding the 16 bits (to store through an int16 view)."""
    return round_to_bf16(v).to(tl.int32, bitcast=True) >> 16


@triton.jit
def store_cast(ptrs, v, mask, KIND: tl.constexpr):
    """Store fp32 ``v`` as fp32 / bf16 (through int16 bits) / fp16, rounding to nearest even."""
    if KIND == KIND_F32:
        tl.store(ptrs, v, mask=mask)
    elif KIND == KIND_BF16:
        tl.store(ptrs, bf16_bits(v).to(tl.int16), mask=mask)
    else:
        # The cast rounds correctly everywhere, but its NaN differs (the GPU's cvt writes
        # 0x7FFF, numpy 0x7E00): a NaN is stored as the canonical 0x7E00.
        h = v.to(tl.float16).to(tl.int16, bitcast=True)
        h = tl.where(v != v, F16_QNAN_BITS, h)
        tl.store(ptrs, h.to(tl.float16, bitcast=True), mask=mask)


# ----------------------------------------------------------------------------------
# E4M3 (reference.e4m3_round) and the scale chain (reference.global_encode_scale, ...)
# ----------------------------------------------------------------------------------

@triton.jit
def e4m3_rne(v):
    """fp32 ``v`` with |v| <= 448 (or NaN) -> (E4M3 value as fp32, E4M3 byte as int32).

    Round to nearest even by the FP32 "add a power of two and subtract it" trick: with
    ``c = 2^(e+20)`` for the binade exponent ``e`` of |v| (at least -6, the E4M3 subnormal
    binade), ``|v| + c`` lies in ``[c, 2c)`` where the FP32 ulp is ``2^(e-3)``, the E4M3
    quantum; the hardware's RNE addition does the rounding and ``- c`` is exact.
    Every NaN gives the canonical byte 0x7F (reference.e4m3_round).
    """
    bits = v.to(tl.int32, bitcast=True)
    a_bits = bits & 0x7FFFFFFF
    a = a_bits.to(tl.float32, bitcast=True)
    exp = tl.maximum((a_bits >> 23) - 127, -6)
    c = ((exp + 147) << 23).to(tl.float32, bitcast=True)
    r = (a + c) - c
    r_bits = r.to(tl.int32, bitcast=True)
    normal = (((r_bits >> 23) - 120) << 3) | ((r_bits >> 20) & 7)
    subnormal = (r * 512.0).to(tl.int32)                  # r = m * 2^-9, m in 0..8
    byte = tl.where(r >= 0.015625, normal, subnormal)
    byte = tl.where(r != r, E4M3_NAN_BYTE, byte | ((bits >> 24) & 0x80))
    value = with_sign_of(r, bits)
    return value, byte


@triton.jit
def e4m3_byte_to_f32(byte):
    """E4M3 byte (int32 0..255) -> fp32 value; 0x7F / 0xFF are NaN."""
    exp = (byte >> 3) & 0xF
    man = byte & 7
    normal = (((exp + 120) << 23) | (man << 20)).to(tl.float32, bitcast=True)
    value = tl.where(exp == 0, man.to(tl.float32) * 0.001953125, normal)   # man * 2^-9
    value = with_sign_of(value, byte << 24)                   # bit 7 of the byte -> bit 31
    return tl.where((byte & 0x7F) == 0x7F, nan_f32(), value)


@triton.jit
def canonical_amax(amax):
    """A non-finite global amax becomes the canonical NaN (reference.tensor_amax)."""
    return tl.where(abs_bits(amax) >= INF_BITS, nan_f32(), amax)


@triton.jit
def global_encode_scale(amax):
    """S_enc = min(2688 / amax, FLT_MAX), 1 where amax == 0 or S_enc == 0; NaN stays NaN."""
    s_enc = tl.div_rn(2688.0, amax)
    s_enc = tl.where(s_enc > FLT_MAX, FLT_MAX, s_enc)      # not tl.minimum: keep NaN
    return tl.where((amax == 0.0) | (s_enc == 0.0), 1.0, s_enc)


@triton.jit
def global_decode_scale(amax):
    """reference.global_decode_scale: S_dec = 1 / S_enc of the stored amax."""
    return tl.div_rn(1.0, global_encode_scale(amax))


@triton.jit
def encode_constants(amax):
    """(S_enc * (1/6), S_dec) for quantizing against global ``amax`` (already canonical)."""
    s_enc = global_encode_scale(amax)
    return s_enc * ONE_SIXTH, tl.div_rn(1.0, s_enc)


@triton.jit
def block_scale_and_encode(block_amax_bits, factor, s_dec):
    """(E4M3 byte of s_b, enc_b) from a block's |x|-max bits (reference.block_scales,
    reference.block_encode_scales). A non-finite block amax or a NaN global scale gives
    byte 0x7F and enc NaN; no lower clamp, so an all-zero block has byte 0, enc FLT_MAX."""
    block_amax = block_amax_bits.to(tl.float32, bitcast=True)
    block_amax = tl.where(block_amax_bits >= INF_BITS, nan_f32(), block_amax)
    s = block_amax * factor
    s = tl.where(s > 448.0, 448.0, tl.where(s < -448.0, -448.0, s))
    s_val, s_byte = e4m3_rne(s)
    s_byte = tl.where(s_val != s_val, E4M3_NAN_BYTE, s_byte)
    enc = tl.div_rn(1.0, s_val * s_dec)
    enc = tl.where(enc > FLT_MAX, FLT_MAX, enc)
    return s_byte, enc


# ----------------------------------------------------------------------------------
# E2M1 rounding (reference.e2m1_round_rne, reference.e2m1_round_stochastic)
# ----------------------------------------------------------------------------------

@triton.jit
def e2m1_rne(a):
    """Magnitude code 0..7 of ``a >= 0`` (not NaN) rounded to nearest even, saturating at 6.

    FP32 arithmetic does the rounding: with ``c = 2^(max(e, 0) + 22)`` for the binade
    exponent ``e`` of ``min(a, 6)``, the FP32 ulp on ``[c, 2c)`` is ``2^(max(e,0)-1)``, the
    E2M1 quantum of that binade (0.5 below 2), so ``(a + c) - c`` is ``a`` rounded to the
    E2M1 grid, ties to even. A grid value ``g`` times ``2^-126`` is a float whose bits
    above bit 22 are exactly its code (0.5 -> 1, 1 -> 2, 1.5 -> 3, ..., 6 -> 7).
    """
    sat_bits = tl.minimum(a.to(tl.int32, bitcast=True), 0x40C00000)          # min(a, 6)
    c_bits = (tl.maximum(sat_bits, 0x3F800000) & 0x7F800000) + (22 << 23)
    c = c_bits.to(tl.float32, bitcast=True)
    grid = (sat_bits.to(tl.float32, bitcast=True) + c) - c
    return (grid * 1.1754943508222875e-38).to(tl.int32, bitcast=True) >> 22   # g * 2^-126


@triton.jit
def e2m1_stochastic(a, words):
    """Magnitude code of ``a >= 0`` (not NaN) rounded stochastically with uint32 ``words``
    (NUMERICS 4).

    With ``a`` clamped to 6: ``lo``, the grid value at or below ``a``, is ``a`` with all but
    one mantissa bit cleared from 1 up, and 0 or 0.5 below 1; the step to the next grid
    value is a power of two, so ``threshold = (a - lo) / step * 2^24`` is one exact
    subtraction and one exact multiply. Round up iff ``float(word >> 8) < threshold``
    (never at ``a = 6``: threshold 0).
    """
    sat_bits = tl.minimum(a.to(tl.int32, bitcast=True), 0x40C00000)
    at_least_one = sat_bits >= 0x3F800000
    lo_bits = tl.where(at_least_one, sat_bits & -4194304,                    # 0xFFC00000
                       tl.where(sat_bits >= 0x3F000000, 0x3F000000, 0))
    # 2^24 / step: step = 2^(e-1) from 1 up (e = binade exponent), 0.5 below.
    scale_bits = tl.where(at_least_one, 0x7F800000 - (sat_bits & 0x7F800000), 0x40000000)
    lo = lo_bits.to(tl.float32, bitcast=True)
    threshold = ((sat_bits.to(tl.float32, bitcast=True) - lo)
                 * (scale_bits + (24 << 23)).to(tl.float32, bitcast=True))
    up = ((words >> 8).to(tl.float32) < threshold).to(tl.int32)
    return ((lo * 1.1754943508222875e-38).to(tl.int32, bitcast=True) >> 22) + up


@triton.jit
def philox_words(seed, counters):
    """Philox4x32-10 words for uint64 ``counters`` [...] as a tensor [..., 2, 2] whose
    last two axes (h, l) hold word 2h + l, so a reshape puts word w of counter c at flat
    position 4c + w (NUMERICS 4.1: element i takes word i & 3 of counter offset + i >> 2).
    """
    w0, w1, w2, w3 = tl.randint4x(seed, counters)
    return tl.join(tl.join(w0, w2), tl.join(w1, w3))


@triton.jit
def encode_codes(abs_x_bits, sign_source, enc, words, STOCHASTIC: tl.constexpr):
    """E2M1 codes of ``x * enc`` (``enc`` broadcast per block), sign from ``sign_source``.

    ``|x * enc|`` is computed as ``|x| * |enc|`` (the same IEEE product) from the |x| bits
    the block-amax reduction already produced. ``x * enc`` is NaN exactly where ``enc`` is
    (a non-finite block or global amax), and such blocks get magnitude 0 (NUMERICS 2).
    """
    a = abs_x_bits.to(tl.float32, bitcast=True) * tl.abs(enc)
    if STOCHASTIC:
        mag = e2m1_stochastic(a, words)
    else:
        mag = e2m1_rne(a)
    return tl.where(enc == enc, mag, 0) | sign_code(sign_source)


# ----------------------------------------------------------------------------------
# Tile helpers
# ----------------------------------------------------------------------------------

@triton.jit
def pack_pairs(codes, ROWS: tl.constexpr, COLS: tl.constexpr):
    """[ROWS, COLS] codes -> [ROWS, COLS/2] uint8, even column in the low nibble."""
    even, odd = tl.split(tl.reshape(codes, [ROWS, COLS // 2, 2]))
    return (even | (odd << 4)).to(tl.uint8)


@triton.jit
def pack_column_words(codes, CHUNKS: tl.constexpr, COLS: tl.constexpr):
    """[CHUNKS, 16, COLS] codes -> [CHUNKS, COLS] int64: the 16 codes of each column of a
    chunk as the 8 packed bytes of the transposed copy (code j at bits 4j, little endian)."""
    shifts = (tl.arange(0, 16) * 4).to(tl.int64)
    return tl.sum(codes.to(tl.int64) << shifts[None, :, None], axis=1)


@triton.jit
def fwht16_rows(x, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Walsh-Hadamard butterfly over each group of 16 consecutive rows of [ROWS, COLS].

    Stage b pairs rows r and r ^ 2^b, index bit 0 first: the same additions, in the same
    order, as the reference's balanced pairwise tree over j of x_j * H[j, k].
    """
    for b in tl.static_range(4):
        y = tl.reshape(x, [ROWS >> (b + 1), 2, 1 << b, COLS])
        lo, hi = tl.split(tl.permute(y, (0, 2, 3, 1)))
        y = tl.permute(tl.join(lo + hi, lo - hi), (0, 3, 1, 2))
        x = tl.reshape(y, [ROWS, COLS])
    return x


@triton.jit
def hadamard_negative_mask(k):
    """Bit j set where H[j][k] = -1 (H[j][k] = (-1)^popcount(j & k)); XOR-linear in k."""
    return (tl.where((k & 1) != 0, 0xAAAA, 0) ^ tl.where((k & 2) != 0, 0xCCCC, 0)
            ^ tl.where((k & 4) != 0, 0xF0F0, 0) ^ tl.where((k & 8) != 0, 0xFF00, 0))


@triton.jit
def rht_zero_signs(products, y, ROWS: tl.constexpr, COLS: tl.constexpr):
    """The butterfly output ``y`` with the sign of each exact zero set as the reference's
    pairwise tree sets it (csrc rht16_to_bf16 does the same).

    The butterfly matches the tree up to the sign of each partial sum, which changes no
    nonzero result, only the sign of a zero. The tree's sum is -0 only when all 16 of its
    products are -0 (an exact cancellation gives +0): so a zero output is +0 unless every
    product of its chunk is zero, and then it is -0 iff product j has sign H[j][k] < 0
    flipped, for all j.
    """
    CHUNKS: tl.constexpr = ROWS // 16
    p_bits = tl.reshape(products, [CHUNKS, 16, COLS]).to(tl.int32, bitcast=True)
    any_nonzero = tl.max(p_bits & 0x7FFFFFFF, axis=1)                      # [CHUNKS, COLS]
    j = tl.arange(0, 16)
    negative = tl.sum(((p_bits >> 31) & 1) << j[None, :, None], axis=1)   # bit j: product j < 0
    all_negative = ((negative[:, None, :] ^ hadamard_negative_mask(j)[None, :, None])
                    & 0xFFFF) == 0xFFFF                                   # [CHUNKS, 16 (k), COLS]
    zero_bits = tl.where((any_nonzero[:, None, :] == 0) & all_negative, -2147483648, 0)
    y_bits = tl.reshape(y, [CHUNKS, 16, COLS]).to(tl.int32, bitcast=True)
    y_bits = tl.where((y_bits & 0x7FFFFFFF) == 0, zero_bits, y_bits)
    return tl.reshape(y_bits, [ROWS, COLS]).to(tl.float32, bitcast=True)


@triton.jit
def rht_rows(x, signs_ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
    """The RHT across each 16-row group of x, before the bf16 rounding (reference.rht along
    the row axis). ``signs_ptr`` holds s_j / 4 as fp32, so x_j * (s_j / 4) is the
    reference's exact product term, and the butterfly's +-1 are exact sign flips of it."""
    quarter_signs = tl.load(signs_ptr + (tl.arange(0, ROWS) % 16))
    products = x * quarter_signs[:, None]
    return rht_zero_signs(products, fwht16_rows(products, ROWS, COLS), ROWS, COLS)


@triton.jit
def to_bf16(y, HW_BF16: tl.constexpr):
    """bf16 RNE of the RHT output y, widened back to fp32; every NaN becomes the bf16
    0xFFFF of reference.rht. ``HW_BF16`` (compiled kernels) uses the GPU's convert
    instruction, which the interpreter does not run faithfully; the integer path gives the
    same bits."""
    if HW_BF16:
        out = y.to(tl.bfloat16).to(tl.float32)
    else:
        out = round_to_bf16(y)
    rht_nan = tl.full([], RHT_NAN_BITS, tl.int32).to(tl.float32, bitcast=True)
    return tl.where(y != y, rht_nan, out)
