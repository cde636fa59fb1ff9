// The tensor-level ops that bindings.cpp registers (CPU) and cuda_ops.cpp registers
// (CUDA). Arguments follow the schemas in bindings.cpp:
//   rht_mask  -1 for no RHT, else bit j set where sign j of the RHT is -1
//   seed, offset  uint64 values carried in int64 (two's complement)
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>
#include <vector>

namespace lowprec {

using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using TwoTriples =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Product of all dims but the last (the row count, also when K == 0).
inline int64_t leading_rows(const at::Tensor& x) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  return rows;
}

// `shape` with its last dim replaced by `last` (the shape of packed codes or scales).
inline std::vector<int64_t> with_last(at::IntArrayRef shape, int64_t last) {
  std::vector<int64_t> s(shape.begin(), shape.end());
  s.back() = last;
  return s;
}

// Raises ValueError/TypeError naming the bad value unless x can be NVFP4-quantized in
// blocks of block_rows (1 or 16) x 16 with RHT mask rht_mask (-1 or 0..0xFFFF). Shared by
// the CPU and CUDA ops (defined in quantize_cpu.cpp).
void check_quantize_args(const at::Tensor& x, int64_t block_rows, int64_t rht_mask,
                         const char* op);

namespace cpu {

Triple quantize_nvfp4(const at::Tensor& x, int64_t block_rows, int64_t rht_mask,
                      bool stochastic, int64_t seed, int64_t offset,
                      const std::optional<at::Tensor>& amax);

TwoTriples quantize_row_col(const at::Tensor& x, int64_t rht_mask, bool rowwise,
                                 bool columnwise, bool row_stochastic, bool col_stochastic,
                                 int64_t seed, int64_t row_offset, int64_t col_offset,
                                 const std::optional<at::Tensor>& row_amax,
                                 const std::optional<at::Tensor>& col_amax);

TwoTriples quantize_weight_2d(const at::Tensor& w, bool columnwise, bool stochastic, int64_t seed,
                             int64_t offset, const std::optional<at::Tensor>& amax);

at::Tensor block_dequantize_nvfp4(const at::Tensor& data, const at::Tensor& scale);

std::tuple<at::Tensor, at::Tensor> quantize_fp8_rowwise(const at::Tensor& x);

at::Tensor nvfp4_gemm(const at::Tensor& a_data, const at::Tensor& a_scale,
                      const at::Tensor& a_amax, const at::Tensor& b_data,
                      const at::Tensor& b_scale, const at::Tensor& b_amax,
                      const std::optional<at::Tensor>& bias, at::ScalarType out_dtype);

// Element functions exposed for exhaustive tests of nvfp4_math.h.
at::Tensor philox(int64_t seed, const at::Tensor& counters);
at::Tensor e4m3_round(const at::Tensor& v);
at::Tensor e2m1_round(const at::Tensor& v, const std::optional<at::Tensor>& words);
at::Tensor rht(const at::Tensor& x, int64_t rht_mask);

}  // namespace cpu
}  // namespace lowprec
