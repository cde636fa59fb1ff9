// CUDA implementations of the quantize ops: validation, allocation and launches on the
// current stream. Built only into the CUDA extension (LOWPREC_WITH_CUDA); the kernels
// are in quantize.cu behind the plain-pointer API of quantize_cuda.h.
//
// When the caller gives no amax, an amax launch computes it on the device first, so
// nothing here synchronizes with the host: two launches, amax then quantize. The amax
// launch stores one partial max per thread block into a scratch array made with
// at::empty (no memset: every partial the quantize kernel reads was written), and the
// quantize kernel reduces them in its prologue (quantize_cuda.h).
#include "ops.h"
#include "quantize_cuda.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <stdint.h>

#include <vector>

namespace lowprec::cuda_ops {
namespace {

using cuda::AmaxIn;
using cuda::InputType;
using cuda::QuantOut;
using cuda::Rounding;

InputType input_type(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return InputType::kFloat32;
    case at::kBFloat16: return InputType::kBFloat16;
    default: return InputType::kFloat16;  // check_quantize_args allowed only these three
  }
}

// Contiguous, and 16-byte aligned for the kernels' vector loads (a view with an odd
// storage offset is copied).
at::Tensor kernel_input(const at::Tensor& x_in) {
  TORCH_CHECK_VALUE(x_in.is_cuda(), "expected a CUDA tensor; got device ", x_in.device());
  at::Tensor x = x_in.contiguous();
  if (reinterpret_cast<uintptr_t>(x.const_data_ptr()) % 16 != 0) x = x.clone();
  return x;
}

// A caller-given amax as a device FP32 pointer; `keep` owns the converted copy.
AmaxIn given_amax(const at::Tensor& amax, const at::Tensor& x, at::Tensor& keep) {
  TORCH_CHECK_VALUE(amax.numel() == 1, "amax must hold one value; got shape ", amax.sizes());
  keep = amax.to(x.device(), at::kFloat).contiguous();
  return AmaxIn{keep.const_data_ptr<float>(), nullptr, 0};
}

static_assert(kNvfp4Variants == cuda::kQuantizeVariants &&
                  kRowColVariants == cuda::kRowColVariants &&
                  kWeight2dVariants == cuda::kTileVariants,
              "ops.h and quantize_cuda.h count the same kernel variants");

// Scratch for the partials of `n` amaxes, kMaxAmaxPartials words each. Uninitialised:
// allocating launches nothing, and the amax launch writes every word the quantize reads.
at::Tensor partials_buffer(const at::Tensor& x, int64_t n) {
  return at::empty({n * cuda::kMaxAmaxPartials}, x.options().dtype(at::kInt));
}

uint32_t* bits_ptr(at::Tensor& bits, int64_t amax_index = 0) {
  return reinterpret_cast<uint32_t*>(bits.mutable_data_ptr<int32_t>()) +
         amax_index * cuda::kMaxAmaxPartials;
}

// No amax given: the amax launch of x [rows, cols] (RHT by rht_mask along the last dim),
// its partials in `keep`.
AmaxIn computed_amax(const at::Tensor& x, int64_t rows, int64_t cols, int32_t rht_mask,
                     at::Tensor& keep, cudaStream_t stream) {
  keep = partials_buffer(x, 1);
  int count = 0;
  C10_CUDA_CHECK(cuda::launch_amax(x.const_data_ptr(), input_type(x), rows, cols, rht_mask,
                                   bits_ptr(keep), &count, stream));
  return AmaxIn{nullptr, bits_ptr(keep), count};
}

// A copy's outputs: codes and scales, or in values mode (data bf16) its values and a
// 0-element scale.
struct Outputs {
  at::Tensor data, scale, amax;
  bool values = false;
  QuantOut ptrs() {
    return QuantOut{static_cast<uint8_t*>(data.mutable_data_ptr()),
                    values ? nullptr : static_cast<uint8_t*>(scale.mutable_data_ptr()),
                    amax.mutable_data_ptr<float>(), values};
  }
  Triple triple() const { return {data, scale, amax}; }
};

// Outputs of a [rows..., cols] quantization: data uint8 [rows..., cols/2] and scale
// float8_e4m3fn [rows..., cols/16]; with `values`, data bf16 [rows..., cols] and scale
// float8_e4m3fn [0] (lowprec/formats.py empty_values).
Outputs allocate(const at::Tensor& x, std::vector<int64_t> rows_shape, int64_t cols,
                 bool values = false) {
  at::Tensor amax = at::empty({}, x.options().dtype(at::kFloat));
  if (values) {
    rows_shape.push_back(cols);
    return Outputs{at::empty(rows_shape, x.options().dtype(at::kBFloat16)),
                   at::empty({0}, x.options().dtype(at::kFloat8_e4m3fn)), amax, true};
  }
  rows_shape.push_back(cols / 2);
  at::Tensor data = at::empty(rows_shape, x.options().dtype(at::kByte));
  rows_shape.back() = cols / 16;
  at::Tensor scale = at::empty(rows_shape, x.options().dtype(at::kFloat8_e4m3fn));
  return Outputs{data, scale, amax, false};
}

constexpr QuantOut kNoOutput{nullptr, nullptr, nullptr, false};

Rounding rounding(bool stochastic, int64_t seed, int64_t offset,
                  const uint64_t* seed_ptr = nullptr) {
  return Rounding{stochastic, static_cast<uint64_t>(seed), static_cast<uint64_t>(offset),
                  seed_ptr};
}

// The device address of a key given in memory (checked), or nullptr for a key by value.
const uint64_t* seed_pointer(const std::optional<at::Tensor>& seed_tensor, const at::Tensor& x,
                             const char* op) {
  if (!seed_tensor.has_value()) return nullptr;
  check_seed_tensor(*seed_tensor, x, op);
  return reinterpret_cast<const uint64_t*>(seed_tensor->const_data_ptr<int64_t>());
}

// quantize_nvfp4, and the rowwise-only quantize_row_col (values: in values mode).
Triple quantize_rows(const at::Tensor& x_in, int64_t block_rows, int64_t rht_mask,
                     bool stochastic, int64_t seed, int64_t offset,
                     const std::optional<at::Tensor>& amax, int64_t variant, bool values,
                     const uint64_t* seed_ptr = nullptr) {
  check_quantize_args(x_in, block_rows, rht_mask, "quantize_nvfp4");
  check_variant(variant, kNvfp4Variants, "quantize_nvfp4");
  at::Tensor x = kernel_input(x_in);
  c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t cols = x.size(-1), rows = leading_rows(x);
  const int32_t mask = static_cast<int32_t>(rht_mask);
  std::vector<int64_t> lead(x.sizes().begin(), x.sizes().end() - 1);
  Outputs out = allocate(x, lead, cols, values);

  at::Tensor keep;
  const AmaxIn source = amax.has_value() ? given_amax(*amax, x, keep)
                                         : computed_amax(x, rows, cols, mask, keep, stream);
  C10_CUDA_CHECK(cuda::launch_quantize(x.const_data_ptr(), input_type(x), rows, cols,
                                       static_cast<int>(block_rows), mask, source,
                                       rounding(stochastic, seed, offset, seed_ptr),
                                       out.ptrs(),
                                       kNoOutput,
                                       // the variants are the 1x16 kernel's
                                       block_rows == 16 ? 0 : static_cast<int>(variant),
                                       stream));
  return out.triple();
}

Triple quantize_nvfp4(const at::Tensor& x_in, int64_t block_rows, int64_t rht_mask,
                      bool stochastic, int64_t seed, int64_t offset,
                      const std::optional<at::Tensor>& amax, int64_t variant) {
  return quantize_rows(x_in, block_rows, rht_mask, stochastic, seed, offset, amax, variant,
                       false);
}

Triple absent_copy(const at::Tensor& x) {
  return {at::empty({0}, x.options().dtype(at::kByte)),
          at::empty({0}, x.options().dtype(at::kFloat8_e4m3fn)),
          at::empty({}, x.options().dtype(at::kFloat))};
}

TwoTriples quantize_weight_2d(const at::Tensor& w_in, bool columnwise, bool stochastic,
                             int64_t seed, int64_t offset, const std::optional<at::Tensor>& amax,
                             int64_t variant, bool values) {
  check_quantize_args(w_in, 16, -1, "quantize_weight_2d");
  check_variant(variant, kWeight2dVariants, "quantize_weight_2d");
  check_weight_values(columnwise, values);
  TORCH_CHECK_VALUE(w_in.dim() == 2, "quantize_weight_2d takes a 2-D weight [N, K]; got shape ",
                    w_in.sizes());
  at::Tensor w = kernel_input(w_in);
  c10::cuda::CUDAGuard guard(w.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = w.size(0), k = w.size(1);
  Outputs row = allocate(w, {n}, k, values);
  Outputs col = columnwise ? allocate(w, {k}, n) : Outputs{};
  at::Tensor keep;
  const AmaxIn source = amax.has_value() ? given_amax(*amax, w, keep)
                                         : computed_amax(w, n, k, -1, keep, stream);
  C10_CUDA_CHECK(cuda::launch_quantize(
      w.const_data_ptr(), input_type(w), n, k, 16, -1, source, rounding(stochastic, seed, offset),
      row.ptrs(), columnwise ? col.ptrs() : kNoOutput, static_cast<int>(variant), stream));
  return std::tuple_cat(row.triple(), columnwise ? col.triple() : absent_copy(w));
}

TwoTriples quantize_row_col(const at::Tensor& x_in, int64_t rht_mask, bool rowwise,
                                 bool columnwise, bool row_stochastic, bool col_stochastic,
                                 int64_t seed, int64_t row_offset, int64_t col_offset,
                                 const std::optional<at::Tensor>& row_amax,
                                 const std::optional<at::Tensor>& col_amax, int64_t variant,
                                 bool row_values, bool col_values,
                                 const std::optional<at::Tensor>& seed_tensor) {
  check_variant(variant, kRowColVariants, "quantize_row_col");
  const uint64_t* seed_ptr = seed_pointer(seed_tensor, x_in, "quantize_row_col");
  // Only the baseline kernel reads a key in memory (quantize.cu, key_of): same bits.
  if (seed_ptr != nullptr) variant = 0;
  if (!columnwise) {  // the plain 1x16 kernel (its variant 0) needs no shared-memory transpose
    Triple row = rowwise ? quantize_rows(x_in, 1, -1, row_stochastic, seed, row_offset,
                                         row_amax, 0, row_values, seed_ptr)
                         : absent_copy(x_in);
    return std::tuple_cat(row, absent_copy(x_in));
  }
  check_quantize_args(x_in, 1, rht_mask, "quantize_row_col");
  at::Tensor x = kernel_input(x_in);
  c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t cols = x.size(-1), rows = leading_rows(x);
  const int64_t padded = (rows + 15) / 16 * 16;
  const int32_t mask = static_cast<int32_t>(rht_mask);
  std::vector<int64_t> lead(x.sizes().begin(), x.sizes().end() - 1);
  Outputs row = rowwise ? allocate(x, lead, cols, row_values) : Outputs{};
  Outputs col = allocate(x, {cols}, padded, col_values);

  // Partials of both amaxes from one amax launch when either is not given.
  at::Tensor keep_row, keep_col, bits;
  int count = 0;
  if ((rowwise && !row_amax.has_value()) || !col_amax.has_value()) {
    bits = partials_buffer(x, 2);
    C10_CUDA_CHECK(cuda::launch_row_col_amax(x.const_data_ptr(), input_type(x), rows, cols, mask,
                                            bits_ptr(bits, 0), bits_ptr(bits, 1), &count,
                                            stream));
  }
  AmaxIn row_source{nullptr, nullptr, 0}, col_source{nullptr, nullptr, 0};
  if (rowwise) {
    row_source = row_amax.has_value() ? given_amax(*row_amax, x, keep_row)
                                      : AmaxIn{nullptr, bits_ptr(bits, 0), count};
  }
  col_source = col_amax.has_value() ? given_amax(*col_amax, x, keep_col)
                                    : AmaxIn{nullptr, bits_ptr(bits, 1), count};
  C10_CUDA_CHECK(cuda::launch_quantize_row_col(
      x.const_data_ptr(), input_type(x), rows, cols, mask, rowwise, true, row_source, col_source,
      rounding(row_stochastic, seed, row_offset, seed_ptr),
      rounding(col_stochastic, seed, col_offset, seed_ptr),
      rowwise ? row.ptrs() : kNoOutput, col.ptrs(), static_cast<int>(variant), stream));
  return std::tuple_cat(rowwise ? row.triple() : absent_copy(x), col.triple());
}

}  // namespace
}  // namespace lowprec::cuda_ops

TORCH_LIBRARY_IMPL(lowprec_C, CUDA, m) {
  m.impl("quantize_nvfp4", &lowprec::cuda_ops::quantize_nvfp4);
  m.impl("quantize_row_col", &lowprec::cuda_ops::quantize_row_col);
  m.impl("quantize_weight_2d", &lowprec::cuda_ops::quantize_weight_2d);
}
