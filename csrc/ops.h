// The tensor-level ops that bindings.cpp registers (CPU) and cuda_ops.cpp registers
// (CUDA). Arguments follow the schemas in bindings.cpp:
//   rht_mask  -1 for no RHT, else bit j set where sign j of the RHT is -1
//   seed, offset  uint64 values carried in int64 (two's complement)
//   row_values, col_values, values  values mode of a copy (bf16 e2m1(q) * f32(s_b))
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

// Kernel variants of the CUDA quantize ops (the schemas' `variant`, default 0; see
// quantize_cuda.h and CUDA_VARIANTS in lowprec/_C.py): every variant gives the same bits,
// so the CPU kernels, which have one implementation, only check the index.
constexpr int64_t kNvfp4Variants = 4;     // quantize_nvfp4 (the 1x16 kernel)
constexpr int64_t kRowColVariants = 4;    // quantize_row_col (the fused kernel)
constexpr int64_t kWeight2dVariants = 2;  // quantize_weight_2d (the 16x16 kernel)

// Raises ValueError unless 0 <= variant < count.
inline void check_variant(int64_t variant, int64_t count, const char* op) {
  TORCH_CHECK_VALUE(variant >= 0 && variant < count, op, ": variant must be in [0, ", count,
                    "); got ", variant);
}

// Values mode of quantize_weight_2d gives W's values only (W^T's are their transpose):
// ValueError, with kernels/backend.py's message, for values with columnwise.
inline void check_weight_values(bool columnwise, bool values) {
  TORCH_CHECK_VALUE(!(values && columnwise),
                    "quantize_weight_2d(values=True) gives W's values only: pass "
                    "columnwise=False and use .t() for W^T (exactly its values)");
}

// The Philox key given in memory (quantize_row_col's seed_tensor): one int64 element on
// x's device, holding the uint64 key's bits. ValueError naming what is wrong otherwise.
inline void check_seed_tensor(const at::Tensor& seed, const at::Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(seed.scalar_type() == at::kLong && seed.numel() == 1, op,
                    ": seed_tensor must be one int64 element; got dtype ", seed.scalar_type(),
                    " with ", seed.numel(), " elements");
  TORCH_CHECK_VALUE(seed.device() == x.device(), op, ": seed_tensor must be on x's device ",
                    x.device(), "; got ", seed.device());
}

// The key of a CPU seed_tensor, read at the call (the CPU kernels run at once).
inline int64_t read_seed_tensor(const at::Tensor& seed, const at::Tensor& x, const char* op) {
  check_seed_tensor(seed, x, op);
  return seed.item<int64_t>();
}

// Raises ValueError/TypeError naming the bad value unless x can be NVFP4-quantized in
// blocks of block_rows (1 or 16) x 16 with RHT mask rht_mask (-1 or 0..0xFFFF). Shared by
// the CPU and CUDA ops (defined in quantize_cpu.cpp).
void check_quantize_args(const at::Tensor& x, int64_t block_rows, int64_t rht_mask,
                         const char* op);

// Raises ValueError/TypeError naming the bad value unless nvfp4_gemm_values can multiply
// a [M, K] by b [N, K]^T: both bf16 (the quantizers' values), K > 0 and equal, each
// amax one FP32-convertible value, out_dtype bf16 or fp32. Shared by the CPU and
// CUDA ops (defined in quantize_cpu.cpp).
void check_gemm_values_args(const at::Tensor& a, const at::Tensor& a_amax, const at::Tensor& b,
                            const at::Tensor& b_amax, at::ScalarType out_dtype);

namespace cpu {

Triple quantize_nvfp4(const at::Tensor& x, int64_t block_rows, int64_t rht_mask,
                      bool stochastic, int64_t seed, int64_t offset,
                      const std::optional<at::Tensor>& amax);

// row_values / col_values (values mode): that copy as its bf16 values e2m1(q) * f32(s_b),
// rowwise [..., K], columnwise [K, M_pad], with a 0-element scale (nvfp4_math.h
// block_values16); ignored for a copy not asked for.
TwoTriples quantize_row_col(const at::Tensor& x, int64_t rht_mask, bool rowwise,
                                 bool columnwise, bool row_stochastic, bool col_stochastic,
                                 int64_t seed, int64_t row_offset, int64_t col_offset,
                                 const std::optional<at::Tensor>& row_amax,
                                 const std::optional<at::Tensor>& col_amax,
                                 bool row_values, bool col_values);

// values (values mode, needs !columnwise): W as its bf16 values [N, K].
TwoTriples quantize_weight_2d(const at::Tensor& w, bool columnwise, bool stochastic, int64_t seed,
                             int64_t offset, const std::optional<at::Tensor>& amax,
                             bool values);

at::Tensor block_dequantize_nvfp4(const at::Tensor& data, const at::Tensor& scale);

std::tuple<at::Tensor, at::Tensor> quantize_fp8_rowwise(const at::Tensor& x);

at::Tensor nvfp4_gemm(const at::Tensor& a_data, const at::Tensor& a_scale,
                      const at::Tensor& a_amax, const at::Tensor& b_data,
                      const at::Tensor& b_scale, const at::Tensor& b_amax,
                      const std::optional<at::Tensor>& bias, at::ScalarType out_dtype);

// NUMERICS 8 on operands already block-dequantized (bf16 values e2m1 * s_b, no global
// scale): alpha * a @ b^T in FP32, then out_dtype. No bias (the emulation's epilogue
// path adds one).
at::Tensor nvfp4_gemm_values(const at::Tensor& a, const at::Tensor& a_amax, const at::Tensor& b,
                             const at::Tensor& b_amax, at::ScalarType out_dtype);

// Element functions exposed for exhaustive tests of nvfp4_math.h.
at::Tensor philox(int64_t seed, const at::Tensor& counters);
at::Tensor e4m3_round(const at::Tensor& v);
at::Tensor e2m1_round(const at::Tensor& v, const std::optional<at::Tensor>& words);
at::Tensor rht(const at::Tensor& x, int64_t rht_mask);

}  // namespace cpu
}  // namespace lowprec
