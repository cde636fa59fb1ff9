// Exhaustive (or strided) comparison of the fast E2M1 encoders of csrc/nvfp4_math.h with
// the originals, over FP32 bit patterns; built and called by test_cuda_variants.py.
//
// RNE: e2m1_rne_magnitude_fast(a) == e2m1_rne_magnitude(a). SR: the original rounds a up
// iff float(r >> 8) < p * 2^24 (after lo = floor code; nothing moves at lo == 7); two
// thresholds give the same result for every r iff they admit the same number of draws
// 0 <= d < 2^24 (d an integer), so that count and lo are compared, plus a few r directly.
#include <math.h>
#include <stdint.h>

#include "nvfp4_math.h"

using namespace lowprec;

namespace {

uint32_t draws_below(float t) {  // #{d integer in [0, 2^24): d < t}; NaN admits none
  if (!(t > 0.0f)) return 0u;
  if (t >= 16777216.0f) return 16777216u;
  return static_cast<uint32_t>(ceilf(t));
}

// The original SR split, line by line as e2m1_sr_magnitude computes it.
void original_split(float v_abs, uint32_t& lo, uint32_t& admitted) {
  float a = v_abs > kE2m1Max ? kE2m1Max : v_abs;
  lo = e2m1_floor_magnitude(a);
  if (lo >= 7u) {
    admitted = 0u;
    return;
  }
  float lo_v = e2m1_magnitude_value(lo);
  float hi_v = e2m1_magnitude_value(lo + 1u);
  float p = div_rn(sub_rn(a, lo_v), sub_rn(hi_v, lo_v));
  admitted = draws_below(mul_rn(p, 16777216.0f));
}

const uint32_t kWords[] = {0u, 0xFFu, 0x100u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu,
                           0x12345678u, 0x9E3779B9u};

}  // namespace

extern "C" {

// Checks bit patterns first, first + stride, ... (count of them). Returns the number of
// mismatches; *bad gets the first mismatching pattern.
uint64_t fastenc_check(uint32_t first, uint64_t count, uint32_t stride, uint32_t* bad) {
  uint64_t mismatches = 0;
  uint32_t u = first;
  for (uint64_t i = 0; i < count; ++i, u += stride) {
    const float a = abs_of(float_of(u));
    bool ok = e2m1_rne_magnitude_fast(a) == e2m1_rne_magnitude(a);
    uint32_t lo, admitted;
    original_split(a, lo, admitted);
    const SrSplit s = e2m1_sr_split_fast(a);
    ok = ok && s.lo == lo && draws_below(s.threshold) == admitted;
    for (uint32_t r : kWords) ok = ok && e2m1_sr_magnitude_fast(a, r) == e2m1_sr_magnitude(a, r);
    if (!ok) {
      if (mismatches == 0) *bad = u;
      ++mismatches;
    }
  }
  return mismatches;
}

}  // extern "C"
