// C entry points (for ctypes) that drive csrc/quantize.cu's launchers the way
// csrc/cuda_ops.cpp does: an amax launch first when no amax is given (its partials in an
// uninitialised scratch array: here filled with a pattern that reads as NaN, so a kernel
// that read a partial no amax block wrote would fail the comparison), then the
// quantization with the chosen kernel variant, packed or in values mode (a copy's data
// then bf16 [rows, cols], its scale unused). Built with sim.h in place of the CUDA
// runtime; "device" pointers are host pointers.
#include <vector>

#include "nvfp4_gemm_values_cuda.h"
#include "quantize_cuda.h"

using lowprec::cuda::AmaxIn;
using lowprec::cuda::InputType;
using lowprec::cuda::kMaxAmaxPartials;
using lowprec::cuda::QuantOut;
using lowprec::cuda::Rounding;

namespace {
constexpr uint32_t kGarbage = 0xA5A5A5A5u;  // > Inf bits: a NaN amax if ever read
}

extern "C" {

int sim_max_amax_partials() { return kMaxAmaxPartials; }

// The simulated GPU's SM count (one block each); returns the previous one.
int sim_set_sms(int sms) {
  int previous = sim::sms;
  sim::sms = sms;
  return previous;
}

// 1x16 or 16x16 along the last dim; t_* (16x16 only, may be null) get the transposed copy.
// *partials_used (may be null) gets the number of amax partials (0 with a given amax).
// values: `data` gets the bf16 values instead of codes and scales.
int sim_quantize(const void* x, int type, int64_t rows, int64_t cols, int block_rows,
                 int rht_mask, int stochastic, uint64_t seed, uint64_t offset,
                 const float* given_amax, uint8_t* data, uint8_t* scale, float* amax,
                 uint8_t* t_data, uint8_t* t_scale, float* t_amax, int variant,
                 int* partials_used, int values, const uint64_t* seed_ptr) {
  InputType kind = static_cast<InputType>(type);
  std::vector<uint32_t> partials(kMaxAmaxPartials, kGarbage);
  AmaxIn source{given_amax, nullptr, 0};
  if (given_amax == nullptr) {
    int count = -1;
    int err = lowprec::cuda::launch_amax(x, kind, rows, cols, rht_mask, partials.data(), &count,
                                         nullptr);
    if (err != 0) return err;
    if (count < 0 || count > kMaxAmaxPartials) return -1;
    source = AmaxIn{nullptr, partials.data(), count};
  }
  if (partials_used != nullptr) *partials_used = source.count;
  return lowprec::cuda::launch_quantize(x, kind, rows, cols, block_rows, rht_mask, source,
                                        Rounding{stochastic != 0, seed, offset, seed_ptr},
                                        QuantOut{data, scale, amax, values != 0},
                                        QuantOut{t_data, t_scale, t_amax, false}, variant,
                                        nullptr);
}

// The fused rowwise + columnwise quantization of x [rows, cols]; row_values /
// col_values: that copy's data gets its bf16 values. seed_ptr (both entry points; may be
// null): the key in memory, read by the kernel instead of `seed`.
int sim_rowcol(const void* x, int type, int64_t rows, int64_t cols, int rht_mask, int rowwise,
               int row_stochastic, int col_stochastic, uint64_t seed, uint64_t row_offset,
               uint64_t col_offset, const float* row_given, const float* col_given,
               uint8_t* row_data, uint8_t* row_scale, float* row_amax, uint8_t* col_data,
               uint8_t* col_scale, float* col_amax, int variant, int row_values,
               int col_values, const uint64_t* seed_ptr) {
  InputType kind = static_cast<InputType>(type);
  std::vector<uint32_t> row_partials(kMaxAmaxPartials, kGarbage);
  std::vector<uint32_t> col_partials(kMaxAmaxPartials, kGarbage);
  int count = 0;
  if (row_given == nullptr || col_given == nullptr) {
    count = -1;
    int err = lowprec::cuda::launch_row_col_amax(x, kind, rows, cols, rht_mask,
                                                 row_partials.data(), col_partials.data(),
                                                 &count, nullptr);
    if (err != 0) return err;
    if (count < 0 || count > kMaxAmaxPartials) return -1;
  }
  AmaxIn row_source = row_given ? AmaxIn{row_given, nullptr, 0}
                                : AmaxIn{nullptr, row_partials.data(), count};
  AmaxIn col_source = col_given ? AmaxIn{col_given, nullptr, 0}
                                : AmaxIn{nullptr, col_partials.data(), count};
  return lowprec::cuda::launch_quantize_row_col(
      x, kind, rows, cols, rht_mask, rowwise != 0, true, row_source, col_source,
      Rounding{row_stochastic != 0, seed, row_offset, seed_ptr},
      Rounding{col_stochastic != 0, seed, col_offset, seed_ptr},
      QuantOut{row_data, row_scale, row_amax, row_values != 0},
      QuantOut{col_data, col_scale, col_amax, col_values != 0}, variant, nullptr);
}

// alpha and beta of nvfp4_gemm_values from two FP32 amaxes, into scalars[2].
int sim_gemm_scalars(const float* a_amax, const float* b_amax, float* scalars) {
  return lowprec::cuda::launch_gemm_scalars(a_amax, b_amax, scalars, nullptr);
}

}  // extern "C"
