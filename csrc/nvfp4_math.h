// Element math of docs/numerics.md, written once for the GPU kernels (quantize.cu) and the
// CPU loops (quantize_cpu.cpp). Every function reproduces lowprec/reference.py bit for
// bit; the comments say which detail of the reference each step mirrors.
//
// Rules that keep host and device bits identical:
// * Every FP32 operation of the scale chain, SR and the RHT goes through mul_rn/add_rn/
//   sub_rn/div_rn: on the device these are the _rn intrinsics, which the compiler never
//   fuses into an FMA or replaces by an approximate division; on the host they are plain
//   operators, and the build passes -ffp-contract=off.
// * Rounding to E2M1, E4M3 and bf16 is integer and comparison arithmetic, never a
//   hardware conversion (Hopper has no FP4 conversion, and the conversions differ in
//   their NaN and saturation rules).
// * Register arrays are indexed only by constants in fully unrolled loops.
#pragma once

#include <stdint.h>
#include <string.h>

#if defined(__FAST_MATH__) || defined(__USE_FAST_MATH__)
#error "lowprec's numerics are specified bit for bit: build without fast-math"
#endif

#if defined(__CUDACC__)
#define LP_HD __host__ __device__ __forceinline__
#else
#define LP_HD inline
#endif

// Unrolling only matters (and the pragma is only known) in the device pass.
#if defined(__CUDA_ARCH__)
#define LP_UNROLL _Pragma("unroll")
#else
#define LP_UNROLL
#endif

namespace lowprec {

// ---------------------------------------------------------------------------------
// FP32 bits and correctly rounded operations
// ---------------------------------------------------------------------------------

LP_HD uint32_t bits_of(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
#endif
}

LP_HD float float_of(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
#endif
}

LP_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

LP_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

LP_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

LP_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

constexpr uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;
constexpr uint32_t kNanBits = 0x7FC00000u;      // what torch.tensor(float("nan")) holds
constexpr uint32_t kFltMaxBits = 0x7F7FFFFFu;
constexpr uint32_t kOneSixthBits = 0x3E2AAAABu;  // FP32 nearest to 1/6, as _f32(1.0 / 6.0)
constexpr float kE4m3Max = 448.0f;
constexpr float kE2m1Max = 6.0f;
constexpr float kGlobalNumerator = 2688.0f;      // 6 * 448

LP_HD bool is_nan(float f) { return (bits_of(f) & kAbsMask) > kInfBits; }
LP_HD bool is_finite(float f) { return (bits_of(f) & kAbsMask) < kInfBits; }
LP_HD float abs_of(float f) { return float_of(bits_of(f) & kAbsMask); }
LP_HD uint32_t sign_bit(float f) { return bits_of(f) >> 31; }

// The bits of |x| order like the magnitudes, and NaN > Inf > every finite value, so a
// max-reduction over these integers is a NaN-propagating max |x| that no fmaxf can
// drop (NUMERICS 2). A result >= kInfBits means "the block held NaN or Inf".
LP_HD uint32_t abs_bits(float f) { return bits_of(f) & kAbsMask; }
LP_HD uint32_t max_u32(uint32_t a, uint32_t b) { return a > b ? a : b; }

// amax as the reference returns it: NaN (canonical) where the input held NaN or Inf.
LP_HD float amax_from_abs_bits(uint32_t m) { return m >= kInfBits ? float_of(kNanBits) : float_of(m); }

// A caller-given amax: non-finite becomes the canonical NaN, finite values keep their bits.
LP_HD float canonical_amax(float amax) { return is_finite(amax) ? amax : float_of(kNanBits); }

// ---------------------------------------------------------------------------------
// E2M1 (NUMERICS 1, 3, 4)
// ---------------------------------------------------------------------------------

// Magnitude code 0..7 of the magnitude a, rounded to nearest even, saturating at 6.
// Each grid midpoint is a threshold: `>=` where the tie goes up to the even code above,
// `>` where it goes down. NaN fails every comparison: code 0.
LP_HD uint32_t e2m1_rne_magnitude(float a) {
  return static_cast<uint32_t>(a > 0.25f) + static_cast<uint32_t>(a >= 0.75f) +
         static_cast<uint32_t>(a > 1.25f) + static_cast<uint32_t>(a >= 1.75f) +
         static_cast<uint32_t>(a > 2.5f) + static_cast<uint32_t>(a >= 3.5f) +
         static_cast<uint32_t>(a > 5.0f);
}

// Largest magnitude code whose value is <= a (NaN gives 0).
LP_HD uint32_t e2m1_floor_magnitude(float a) {
  return static_cast<uint32_t>(a >= 0.5f) + static_cast<uint32_t>(a >= 1.0f) +
         static_cast<uint32_t>(a >= 1.5f) + static_cast<uint32_t>(a >= 2.0f) +
         static_cast<uint32_t>(a >= 3.0f) + static_cast<uint32_t>(a >= 4.0f) +
         static_cast<uint32_t>(a >= 6.0f);
}

// Value of magnitude code 0..7: {0, .5, 1, 1.5, 2, 3, 4, 6}. E2M1 is a tiny float
// format, so codes >= 2 map to FP32 bits directly (exponent code/2 - 1, mantissa code&1);
// no table, so nothing is indexed at run time on the device.
LP_HD float e2m1_magnitude_value(uint32_t code) {
  if (code < 2) return static_cast<float>(code) * 0.5f;
  return float_of((((code >> 1) + 126u) << 23) | ((code & 1u) << 22));
}

// Stochastic rounding of the magnitude |v| (NUMERICS 4) with the random word r.
LP_HD uint32_t e2m1_sr_magnitude(float v_abs, uint32_t r) {
  float a = v_abs > kE2m1Max ? kE2m1Max : v_abs;  // keeps NaN, like torch.clamp
  uint32_t lo = e2m1_floor_magnitude(a);
  if (lo >= 7u) return 7u;                         // a == 6: p := 0
  float lo_v = e2m1_magnitude_value(lo);
  float hi_v = e2m1_magnitude_value(lo + 1u);
  // hi - lo is a power of two: p is exact, and so is p * 2^24.
  float p = div_rn(sub_rn(a, lo_v), sub_rn(hi_v, lo_v));
  float threshold = mul_rn(p, 16777216.0f);
  float draw = static_cast<float>(r >> 8);         // < 2^24: exact
  return lo + static_cast<uint32_t>(draw < threshold);
}

// ---------------------------------------------------------------------------------
// E4M3 (float8_e4m3fn; NUMERICS 1, 2, 9)
// ---------------------------------------------------------------------------------

// float8_e4m3fn bits of v rounded to nearest even. Precondition: |v| <= 448 or v is NaN
// (callers clamp first, as the reference does: torch 2.11's cast turns |v| >= 480 into
// NaN, torch >= 2.12 saturates). Every NaN becomes the canonical 0x7F, whatever its sign.
LP_HD uint32_t e4m3_rne_bits(float v) {
  uint32_t u = bits_of(v);
  uint32_t sign = (u >> 24) & 0x80u;
  uint32_t mag = u & kAbsMask;
  if (mag > kInfBits) return 0x7Fu;
  uint32_t exponent = mag >> 23;
  if (exponent >= 121u) {  // |v| >= 2^-6: a normal E4M3 number
    // Rebias the exponent (127 -> 7) and keep the top 3 mantissa bits, then round the
    // 20 dropped bits to nearest even; a carry moves into the exponent by itself.
    uint32_t kept = (mag >> 20) - (120u << 3);
    uint32_t dropped = mag & 0xFFFFFu;
    uint32_t up = (dropped > 0x80000u) || (dropped == 0x80000u && (kept & 1u));
    return sign | (kept + up);
  }
  // Subnormal E4M3: multiples of 2^-9. n = RNE(|v| * 2^9) = RNE(M * 2^(exponent - 141))
  // with the 24-bit significand M; n == 8 is the smallest normal, code 0x08.
  if (exponent < 117u) return sign;  // |v| < 2^-10 (half of 2^-9), or an FP32 subnormal
  uint32_t significand = (mag & 0x7FFFFFu) | 0x800000u;
  uint32_t shift = 141u - exponent;  // 21..24
  uint32_t n = significand >> shift;
  uint32_t rest = significand & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1u);
  n += (rest > half) || (rest == half && (n & 1u));
  return sign | n;
}

// Clamp to [-448, 448] (NaN passes, like torch.clamp), then round.
LP_HD uint32_t e4m3_saturate_bits(float v) {
  if (v > kE4m3Max) v = kE4m3Max;
  if (v < -kE4m3Max) v = -kE4m3Max;
  return e4m3_rne_bits(v);
}

LP_HD float e4m3_value(uint32_t b) {
  uint32_t sign = (b & 0x80u) << 24;
  uint32_t exponent = (b >> 3) & 0xFu;
  uint32_t mantissa = b & 7u;
  if (exponent == 15u && mantissa == 7u) return float_of(sign | kNanBits);
  if (exponent == 0u) return float_of(sign | bits_of(static_cast<float>(mantissa) * 0.001953125f));
  return float_of(sign | ((exponent + 120u) << 23) | (mantissa << 20));
}

// ---------------------------------------------------------------------------------
// Scale chain (NUMERICS 2)
// ---------------------------------------------------------------------------------

// S_enc = min(2688 / amax, FLT_MAX); 1 where amax == 0 or S_enc == 0; NaN stays NaN.
LP_HD float global_encode_scale(float amax) {
  float s = div_rn(kGlobalNumerator, amax);
  if (s > float_of(kFltMaxBits)) s = float_of(kFltMaxBits);
  if (amax == 0.0f || s == 0.0f) s = 1.0f;
  return s;
}

LP_HD float global_decode_scale(float amax) { return div_rn(1.0f, global_encode_scale(amax)); }

// s_b = e4m3_rne(min(block_amax * (S_enc * (1/6)), 448)); NaN (0x7F) where the block or
// the tensor held NaN/Inf. No lower clamp: an underflowing block stores 0x00.
LP_HD uint32_t block_scale_bits(float block_amax, float s_enc) {
  if (!is_finite(block_amax)) return 0x7Fu;
  float v = mul_rn(block_amax, mul_rn(s_enc, float_of(kOneSixthBits)));
  if (is_nan(v)) return 0x7Fu;
  return e4m3_saturate_bits(v);
}

// enc_b = min(1 / (f32(s_b) * S_dec), FLT_MAX): FLT_MAX for a zero scale.
LP_HD float block_encode_scale(uint32_t scale_bits, float s_dec) {
  float e = div_rn(1.0f, mul_rn(e4m3_value(scale_bits), s_dec));
  return e > float_of(kFltMaxBits) ? float_of(kFltMaxBits) : e;
}

// ---------------------------------------------------------------------------------
// Philox4x32-10 (NUMERICS 4.1): the same function as Triton's tl.randint4x
// ---------------------------------------------------------------------------------

struct Words4 {
  uint32_t w0, w1, w2, w3;
};

LP_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, b);
  lo = a * b;
#else
  uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
#endif
}

// One Philox round on the counter words (c0..c3), in place, under the round key (k0, k1).
LP_HD void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0,
                        uint32_t k1) {
  uint32_t hi_b, lo_b, hi_a, lo_a;
  mulhilo32(0xCD9E8D57u, c2, hi_b, lo_b);
  mulhilo32(0xD2511F53u, c0, hi_a, lo_a);
  uint32_t n0 = hi_b ^ c1 ^ k0, n2 = hi_a ^ c3 ^ k1;
  c0 = n0;
  c1 = lo_b;
  c2 = n2;
  c3 = lo_a;
}

// The key of the next round.
LP_HD void philox_bump_key(uint32_t& k0, uint32_t& k1) {
  k0 += 0x9E3779B9u;
  k1 += 0xBB67AE85u;
}

// The four words for key (lo32(seed), hi32(seed)) and counter (lo32(c), hi32(c), 0, 0).
LP_HD Words4 philox4x32_10(uint64_t seed, uint64_t counter) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0u, c3 = 0u;
  LP_UNROLL
  for (int round = 0; round < 10; ++round) {
    philox_round(c0, c1, c2, c3, k0, k1);
    philox_bump_key(k0, k1);
  }
  return Words4{c0, c1, c2, c3};
}

LP_HD uint32_t word_of(const Words4& w, int j) {  // j is a constant after unrolling
  return j == 0 ? w.w0 : j == 1 ? w.w1 : j == 2 ? w.w2 : w.w3;
}

// ---------------------------------------------------------------------------------
// bf16 rounding and the 16-point RHT (NUMERICS 6)
// ---------------------------------------------------------------------------------

// FP32 -> bf16 round to nearest even, returned as the FP32 value of the bf16 (its low 16
// bits zero). Overflow rounds to Inf, subnormals round like any other value. NaN becomes
// 0xFFFF: what PyTorch's vectorized CPU conversion, through which the reference's RHT
// runs, produces for every NaN (its scalar path would give 0x7FC0; the bits only set
// the sign nibble of codes in a tensor whose scales are all NaN).
LP_HD float round_to_bf16(float f) {
  uint32_t u = bits_of(f);
#if defined(__CUDA_ARCH__)
  if ((u & kAbsMask) > kInfBits) return float_of(0xFFFF0000u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return float_of(u & 0xFFFF0000u);
#else
  // The same as a select, so that the CPU build's loops over it vectorize (the device
  // keeps the branch: the select costs the prefetch kernels registers, spills at sm_90a).
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  return float_of((u & kAbsMask) > kInfBits ? 0xFFFF0000u : rounded);
#endif
}

// Bit j set where H[j][k] = -1 in the Sylvester matrix, H[j][k] = (-1)^popcount(j & k).
// The map k -> mask is linear over XOR, so four constants build it.
LP_HD uint32_t hadamard_negative_mask(int k) {
  return ((k & 1) ? 0xAAAAu : 0u) ^ ((k & 2) ? 0xCCCCu : 0u) ^ ((k & 4) ? 0xF0F0u : 0u) ^
         ((k & 8) ? 0xFF00u : 0u);
}

// In place: v[k] <- bf16_rne(sum_j v[j] * s_j * H[j][k] / 4) where bit j of neg_mask is
// set for s_j = -1.
//
// The reference sums the 16 exact products as a balanced pairwise tree in index order.
// A radix-2 butterfly that combines index bit 0 first performs the same additions up to
// the sign of each partial sum, and FP32 addition is symmetric under negation, so every
// nonzero result has the same bits. The only difference is the sign of an exact zero:
// the tree's sum is -0 only when all 16 products are -0 (an exact cancellation gives +0),
// so a zero output becomes +0 unless every input product is zero, in which case its
// sign is read off the signs of the products directly.
LP_HD void rht16_to_bf16(float (&v)[16], uint32_t neg_mask) {
  uint32_t negative = 0u, nonzero = 0u;
  LP_UNROLL
  for (int j = 0; j < 16; ++j) {
    v[j] = mul_rn(v[j], ((neg_mask >> j) & 1u) ? -0.25f : 0.25f);  // exact up to underflow
    negative |= sign_bit(v[j]) << j;
    nonzero |= abs_bits(v[j]);
  }
  LP_UNROLL
  for (int h = 1; h < 16; h <<= 1) {
    LP_UNROLL
    for (int j = 0; j < 16; ++j) {
      if ((j & h) == 0) {
        float a = v[j], b = v[j + h];
        v[j] = add_rn(a, b);
        v[j + h] = sub_rn(a, b);
      }
    }
  }
  LP_UNROLL
  for (int k = 0; k < 16; ++k) {
    float sum;
    if (nonzero != 0u) {
      sum = add_rn(v[k], 0.0f);  // -0 + +0 = +0; every other value is unchanged
    } else {
      // Product j is x_j * s_j * H[j][k] / 4: negative iff sign(y_j) xor (H[j][k] < 0).
      bool all_negative = ((negative ^ hadamard_negative_mask(k)) & 0xFFFFu) == 0xFFFFu;
      sum = all_negative ? -0.0f : 0.0f;
    }
    v[k] = round_to_bf16(sum);
  }
}

#if !defined(__CUDA_ARCH__)
// rht16_to_bf16 applied down each of the 16 columns of a 16x16 tile (v[j][c]: element j
// of column c), operation for operation: the same products, butterflies, zero signs and
// rounding per column, so the same bits. Written as loops over the columns, which the
// CPU build vectorizes (a column's 16-element butterfly alone does not).
inline void rht16_to_bf16_columns(float (&v)[16][16], uint32_t neg_mask) {
  uint32_t negative[16] = {}, nonzero[16] = {};
  for (int j = 0; j < 16; ++j) {
    const float sign_scale = ((neg_mask >> j) & 1u) ? -0.25f : 0.25f;
    for (int c = 0; c < 16; ++c) {
      v[j][c] = mul_rn(v[j][c], sign_scale);
      negative[c] |= sign_bit(v[j][c]) << j;
      nonzero[c] |= abs_bits(v[j][c]);
    }
  }
  for (int h = 1; h < 16; h <<= 1) {
    for (int base = 0; base < 16; base += 2 * h) {  // pairs (j, j + h) with bit h of j clear
      for (int j = base; j < base + h; ++j) {
        for (int c = 0; c < 16; ++c) {
          const float a = v[j][c], b = v[j + h][c];
          v[j][c] = add_rn(a, b);
          v[j + h][c] = sub_rn(a, b);
        }
      }
    }
  }
  for (int k = 0; k < 16; ++k) {
    const uint32_t h_negative = hadamard_negative_mask(k);
    for (int c = 0; c < 16; ++c) {
      // rht16_to_bf16's two cases as a select: -0 + +0 = +0 (every other value
      // unchanged) where the column held a nonzero, else the sign read off the products.
      const bool all_negative = ((negative[c] ^ h_negative) & 0xFFFFu) == 0xFFFFu;
      const uint32_t zero_bits = all_negative ? 0x80000000u : 0u;
      const uint32_t sum_bits = nonzero[c] != 0u ? bits_of(add_rn(v[k][c], 0.0f)) : zero_bits;
      v[k][c] = round_to_bf16(float_of(sum_bits));
    }
  }
}
#endif

// ---------------------------------------------------------------------------------
// One 16-element block
// ---------------------------------------------------------------------------------

// max |x| of a block as abs bits (see abs_bits).
LP_HD uint32_t block_abs_bits(const float (&x)[16]) {
  uint32_t m = 0u;
  LP_UNROLL
  for (int j = 0; j < 16; ++j) m = max_u32(m, abs_bits(x[j]));
  return m;
}

// The 4-bit code of x scaled by enc, rounded to nearest even. The sign of the code is
// the sign bit of x, also where the scaled value is NaN.
LP_HD uint32_t e2m1_code_rne(float x, float enc) {
  return e2m1_rne_magnitude(abs_of(mul_rn(x, enc))) | (sign_bit(x) << 3);
}

// The same, stochastically rounded with the random word r.
LP_HD uint32_t e2m1_code_sr(float x, float enc, uint32_t r) {
  return e2m1_sr_magnitude(abs_of(mul_rn(x, enc)), r) | (sign_bit(x) << 3);
}

// Codes of a block, element j in nibble j of the result (so the little-endian bytes
// are the packed layout of NUMERICS 1: even element in the low nibble).
LP_HD uint64_t encode16_rne(const float (&x)[16], float enc) {
  uint64_t packed = 0u;
  LP_UNROLL
  for (int j = 0; j < 16; ++j) packed |= static_cast<uint64_t>(e2m1_code_rne(x[j], enc)) << (4 * j);
  return packed;
}

// Stochastic rounding; element j of the block uses counter counter0 + j/4, word j%4.
// counter0 = offset + flat_index_of_element_0 / 4 (element 0's index is a multiple of 16).
LP_HD uint64_t encode16_sr(const float (&x)[16], float enc, uint64_t seed, uint64_t counter0) {
  uint64_t packed = 0u;
  LP_UNROLL
  for (int c = 0; c < 4; ++c) {
    Words4 w = philox4x32_10(seed, counter0 + static_cast<uint64_t>(c));
    LP_UNROLL
    for (int q = 0; q < 4; ++q) {
      int j = 4 * c + q;
      packed |= static_cast<uint64_t>(e2m1_code_sr(x[j], enc, word_of(w, q))) << (4 * j);
    }
  }
  return packed;
}

// Everything per block after the amaxes are known.
struct EncodedBlock {
  uint64_t codes;
  uint32_t scale;  // float8_e4m3fn bits
};

struct TensorScales {
  float s_enc, s_dec;
};

LP_HD TensorScales tensor_scales(float amax) {
  return TensorScales{global_encode_scale(amax), global_decode_scale(amax)};
}

LP_HD EncodedBlock quantize16(const float (&x)[16], float block_amax, TensorScales t,
                              bool stochastic, uint64_t seed, uint64_t counter0) {
  uint32_t scale = block_scale_bits(block_amax, t.s_enc);
  float enc = block_encode_scale(scale, t.s_dec);
  uint64_t codes = stochastic ? encode16_sr(x, enc, seed, counter0) : encode16_rne(x, enc);
  return EncodedBlock{codes, scale};
}

// ---------------------------------------------------------------------------------
// The same block encoding in fewer instructions (the CUDA kernels' fastenc variants)
// ---------------------------------------------------------------------------------
//
// Bit-identical to e2m1_rne_magnitude / e2m1_sr_magnitude for every FP32 input (checked
// exhaustively by tests/csrc/test_cuda_variants.py); only the instruction sequence
// differs, so nothing of NUMERICS changes.
//
// The E2M1 grid is evenly spaced within [0, 2) (spacing 0.5), [2, 4) (1) and [4, 8)
// (2). For a in such a bucket, M = 1.5 * 2^23 * spacing puts a + M in a binade whose
// FP32 spacing is exactly the grid's, so one FP32 addition rounds a to the grid: to
// nearest with ties to the even multiple of the spacing (M / spacing is even, and the
// even multiple is the even code) in round-to-nearest, down in round-toward-zero. The
// multiple n is read off the bits, n = bits(a + M) - bits(M), and the code is n, n + 2
// and n + 4 in the three buckets (a = 2 is n = 2, code 4; a = 4 is n = 2, code 6; a
// value rounded up to the next bucket's start gets that start's code).

// Host stand-in for the device's round-toward-zero addition (__fadd_rz) of two
// non-negative finite operands: the round-to-nearest sum stepped down one ulp where it
// rounded up (TwoSum gives the exact rounding error).
LP_HD float add_rz(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rz(a, b);
#else
  float s = a + b;
  float bb = s - a;
  float err = (a - (s - bb)) + (b - bb);
  return err < 0.0f ? float_of(bits_of(s) - 1u) : s;
#endif
}

LP_HD float max_nan_to_zero(float a) {  // a >= 0 or NaN: NaN becomes +0 (IEEE maxNum)
#if defined(__CUDA_ARCH__)
  return fmaxf(a, 0.0f);
#else
  return a > 0.0f ? a : 0.0f;
#endif
}

struct E2m1Bucket {
  float magic;            // M = 1.5 * 2^23 * spacing
  uint32_t bias;          // bits(M) - (code - n): code = bits(a + M) - bias
  float threshold_scale;  // 2^24 / spacing
};

// a >= 0, not NaN.
LP_HD E2m1Bucket e2m1_bucket(float a) {
  const bool below2 = a < 2.0f, below4 = a < 4.0f;
  // M = 3 * 2^21 (bits 0x4AC00000), 3 * 2^22 (0x4B400000), 3 * 2^23 (0x4BC00000);
  // code - n = 0, 2, 4.
  return E2m1Bucket{below2 ? 6291456.0f : below4 ? 12582912.0f : 25165824.0f,
                    below2 ? 0x4AC00000u : below4 ? 0x4B400000u - 2u : 0x4BC00000u - 4u,
                    below2 ? 33554432.0f : below4 ? 16777216.0f : 8388608.0f};
}

// e2m1_rne_magnitude(a) for a = |v| (NaN included).
LP_HD uint32_t e2m1_rne_magnitude_fast(float a) {
  a = max_nan_to_zero(a);
  const E2m1Bucket b = e2m1_bucket(a);
  const uint32_t code = bits_of(add_rn(a, b.magic)) - b.bias;  // a >= 8 or Inf: >= 8
  return code < 7u ? code : 7u;
}

// e2m1_sr_magnitude(v_abs, r). lo is a rounded down to the grid; p * 2^24 of NUMERICS 4
// is (a - lo) * (2^24 / spacing), both steps exact (a - lo by Sterbenz or lo = 0, then a
// power-of-two scaling that neither overflows nor underflows), i.e. the same value the
// division gives. NaN: the original's threshold is NaN (never rounds up) at code 0;
// here a = 0 gives threshold 0 at code 0.
struct SrSplit {
  uint32_t lo;      // magnitude code rounded down
  float threshold;  // p * 2^24: round up iff float(r >> 8) < threshold
};

LP_HD SrSplit e2m1_sr_split_fast(float v_abs) {
  float a = max_nan_to_zero(v_abs);
  a = a < kE2m1Max ? a : kE2m1Max;
  const E2m1Bucket b = e2m1_bucket(a);
  const float floor_sum = add_rz(a, b.magic);
  const float lo_v = sub_rn(floor_sum, b.magic);
  // a == 6: code 7 and threshold 0.
  return SrSplit{bits_of(floor_sum) - b.bias, mul_rn(sub_rn(a, lo_v), b.threshold_scale)};
}

LP_HD uint32_t e2m1_sr_magnitude_fast(float v_abs, uint32_t r) {
  const SrSplit s = e2m1_sr_split_fast(v_abs);
  const float draw = static_cast<float>(r >> 8);
  return s.lo + static_cast<uint32_t>(draw < s.threshold);
}

LP_HD uint32_t e2m1_code_rne_fast(float x, float enc) {
  return e2m1_rne_magnitude_fast(abs_of(mul_rn(x, enc))) | (sign_bit(x) << 3);
}

LP_HD uint32_t e2m1_code_sr_fast(float x, float enc, uint32_t r) {
  return e2m1_sr_magnitude_fast(abs_of(mul_rn(x, enc)), r) | (sign_bit(x) << 3);
}

LP_HD uint64_t encode16_rne_fast(const float (&x)[16], float enc) {
  uint64_t packed = 0u;
  LP_UNROLL
  for (int j = 0; j < 16; ++j) {
    packed |= static_cast<uint64_t>(e2m1_code_rne_fast(x[j], enc)) << (4 * j);
  }
  return packed;
}

LP_HD uint64_t encode16_sr_fast(const float (&x)[16], float enc, uint64_t seed,
                                uint64_t counter0) {
  uint64_t packed = 0u;
  LP_UNROLL
  for (int c = 0; c < 4; ++c) {
    Words4 w = philox4x32_10(seed, counter0 + static_cast<uint64_t>(c));
    LP_UNROLL
    for (int q = 0; q < 4; ++q) {
      int j = 4 * c + q;
      packed |= static_cast<uint64_t>(e2m1_code_sr_fast(x[j], enc, word_of(w, q))) << (4 * j);
    }
  }
  return packed;
}

// quantize16 with the fast encoders: the same scale chain, the same bits.
LP_HD EncodedBlock quantize16_fast(const float (&x)[16], float block_amax, TensorScales t,
                                   bool stochastic, uint64_t seed, uint64_t counter0) {
  uint32_t scale = block_scale_bits(block_amax, t.s_enc);
  float enc = block_encode_scale(scale, t.s_dec);
  uint64_t codes =
      stochastic ? encode16_sr_fast(x, enc, seed, counter0) : encode16_rne_fast(x, enc);
  return EncodedBlock{codes, scale};
}

// ---------------------------------------------------------------------------------
// Values mode: an encoded block written as its bf16 values e2m1(q) * f32(s_b)
// ---------------------------------------------------------------------------------
//
// What the Hopper GEMM emulation multiplies (NUMERICS 8, no global scale), the same bits
// as the reference's as_values (and kernels/dequantize.py's block_value_bits): the
// product has at most 6 significant bits and lies within [2^-10, 2688], so it is exact
// in FP32 and in bf16, and its bf16 bits are the top half of its FP32 bits. The sign is
// the code's (code 8 and a negative code under a zero scale give -0.0); where the scale
// is NaN (0x7F: the tensor or the block held NaN/Inf) every value is the canonical bf16
// NaN 0x7FC0.

constexpr uint32_t kBf16NanBits = 0x7FC0u;  // the canonical bf16 NaN (reference.canonical_nan)

// FP32 bits of E2M1 magnitude code 0..7 (e2m1_magnitude_value, fewer instructions): from
// 2 up, code m is 0x3F000000 + (m << 22) (1, 1.5, 2, 3, 4, 6); 1 is 0.5; 0 is 0.
LP_HD uint32_t e2m1_magnitude_bits(uint32_t mag) {
  return mag >= 2u ? 0x3F000000u + (mag << 22) : (mag == 1u ? 0x3F000000u : 0u);
}

// bf16 bits of e2m1(code) * scale for a code 0..15 and the block's FP32 scale
// (e4m3_value of its byte).
LP_HD uint32_t e2m1_scaled_bf16_bits(uint32_t code, float scale) {
  if (is_nan(scale)) return kBf16NanBits;
  const float magnitude = mul_rn(float_of(e2m1_magnitude_bits(code & 7u)), scale);  // exact
  return (bits_of(magnitude) >> 16) | ((code & 8u) << 12);
}

// The 16 values of one encoded block (packed codes, element j in nibble j; E4M3 scale
// byte) as 8 words of two bf16 each, element 2i in the low half of word i: the block's
// 32 bytes in memory order (little-endian).
LP_HD void block_values16(uint64_t codes, uint32_t scale_bits, uint32_t (&out)[8]) {
  const float scale = e4m3_value(scale_bits);
  LP_UNROLL
  for (int i = 0; i < 8; ++i) {
    const uint32_t pair = static_cast<uint32_t>(codes >> (8 * i));
    out[i] = e2m1_scaled_bf16_bits(pair & 0xFu, scale) |
             (e2m1_scaled_bf16_bits((pair >> 4) & 0xFu, scale) << 16);
  }
}

// ---------------------------------------------------------------------------------
// FP8 per-row scaling (NUMERICS 9)
// ---------------------------------------------------------------------------------

// scale = amax_row / 448, 1 for a zero row; Inf propagates, NaN is the canonical one.
LP_HD float fp8_row_scale(float row_amax) {
  float s = div_rn(row_amax, kE4m3Max);
  if (is_nan(s)) return float_of(kNanBits);
  return row_amax == 0.0f ? 1.0f : s;
}

// e4m3_rne(clamp(x / scale, -448, 448)) with a correctly rounded division; a NaN
// quotient gives the canonical byte 0x7F.
LP_HD uint32_t fp8_quantize_bits(float x, float scale) {
  return e4m3_saturate_bits(div_rn(x, scale));
}

}  // namespace lowprec
