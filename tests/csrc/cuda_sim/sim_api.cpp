// C entry points (for ctypes) that drive csrc/quantize.cu's launchers the way
// csrc/cuda_ops.cpp does: an amax launch first when no amax is given, then the
// quantization. Built with sim.h in place of the CUDA runtime; "device" pointers are
// host pointers.
#include "quantize_cuda.h"

using lowprec::cuda::AmaxIn;
using lowprec::cuda::InputType;
using lowprec::cuda::QuantOut;
using lowprec::cuda::Rounding;

extern "C" {

// 1x16 or 16x16 along the last dim; t_* (16x16 only, may be null) get the transposed copy.
int sim_quantize(const void* x, int type, int64_t rows, int64_t cols, int block_rows,
                 int rht_mask, int stochastic, uint64_t seed, uint64_t offset,
                 const float* given_amax, uint8_t* data, uint8_t* scale, float* amax,
                 uint8_t* t_data, uint8_t* t_scale, float* t_amax) {
  InputType kind = static_cast<InputType>(type);
  uint32_t bits = 0u;
  AmaxIn source{given_amax, nullptr};
  if (given_amax == nullptr) {
    int err = lowprec::cuda::launch_amax(x, kind, rows, cols, rht_mask, &bits, nullptr);
    if (err != 0) return err;
    source = AmaxIn{nullptr, &bits};
  }
  return lowprec::cuda::launch_quantize(x, kind, rows, cols, block_rows, rht_mask, source,
                                        Rounding{stochastic != 0, seed, offset},
                                        QuantOut{data, scale, amax},
                                        QuantOut{t_data, t_scale, t_amax}, nullptr);
}

// The fused rowwise + columnwise quantization of x [rows, cols].
int sim_rowcol(const void* x, int type, int64_t rows, int64_t cols, int rht_mask, int rowwise,
               int row_stochastic, int col_stochastic, uint64_t seed, uint64_t row_offset,
               uint64_t col_offset, const float* row_given, const float* col_given,
               uint8_t* row_data, uint8_t* row_scale, float* row_amax, uint8_t* col_data,
               uint8_t* col_scale, float* col_amax) {
  InputType kind = static_cast<InputType>(type);
  uint32_t bits[2] = {0u, 0u};
  if (row_given == nullptr || col_given == nullptr) {
    int err = lowprec::cuda::launch_row_col_amax(x, kind, rows, cols, rht_mask, bits, nullptr);
    if (err != 0) return err;
  }
  AmaxIn row_source = row_given ? AmaxIn{row_given, nullptr} : AmaxIn{nullptr, bits};
  AmaxIn col_source = col_given ? AmaxIn{col_given, nullptr} : AmaxIn{nullptr, bits + 1};
  return lowprec::cuda::launch_quantize_row_col(
      x, kind, rows, cols, rht_mask, rowwise != 0, true, row_source, col_source,
      Rounding{row_stochastic != 0, seed, row_offset}, Rounding{col_stochastic != 0, seed, col_offset},
      QuantOut{row_data, row_scale, row_amax}, QuantOut{col_data, col_scale, col_amax}, nullptr);
}

}  // extern "C"
