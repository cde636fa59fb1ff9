// Registers the ops of the extension with PyTorch's dispatcher under the namespace
// lowprec_C (torch.ops.lowprec_C.*). Schemas live here; CPU kernels are registered here,
// CUDA kernels in cuda_ops.cpp (built only with CUDA), fake (meta) kernels from Python
// in lowprec/_C.py. The module has no Python functions: importing it runs the static
// registrations below, so it needs neither pybind11 nor libtorch_python.
//
// Argument conventions (see lowprec/_C.py, which converts from the Python API):
//   rht_mask  -1: no RHT; else bit j set where sign j of the RHT sign vector is -1
//   seed, offset  uint64 values carried as int64 (two's complement)
//   variant  which CUDA kernel variant runs (same bits; 0, the default, is the original
//            kernel); checked against ops.h's counts on every backend
//   row_values, col_values, values  values mode of that copy: written as its bf16
//            block-dequantized values e2m1(q) * f32(s_b) (no global scale; exact), with a
//            0-element float8_e4m3fn where the scale would be; the same codes, scales and
//            random words as the packed copy (nvfp4_math.h block_values16)
#include <Python.h>

#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(lowprec_C, m) {
  // [..., K] -> (data uint8 [..., K/2], scale float8_e4m3fn [..., K/16], amax fp32 0-d);
  // block_rows 1 (1x16) or 16 (16x16 tiles, tile scale repeated per row).
  m.def(
      "quantize_nvfp4(Tensor x, int block_rows, int rht_mask, bool stochastic, int seed, "
      "int offset, Tensor? amax, int variant=0) -> (Tensor, Tensor, Tensor)");
  // x [..., K] seen as [M, K]: the rowwise copy (no RHT) and the columnwise copy of the
  // zero-padded transpose [K, M_pad] (RHT along M when rht_mask >= 0), one pass. A copy
  // not asked for comes back as empty placeholders (data [0], scale [0], amax 0-d). In
  // values mode the rowwise copy is bf16 [..., K], the columnwise one bf16 [K, M_pad].
  // seed_tensor (int64 [1] on x's device): the Philox key read by the kernel when it runs
  // (a CUDA graph replays its launch with the key of the replay), instead of `seed`.
  m.def(
      "quantize_row_col(Tensor x, int rht_mask, bool rowwise, bool columnwise, "
      "bool row_stochastic, bool col_stochastic, int seed, int row_offset, int col_offset, "
      "Tensor? row_amax, Tensor? col_amax, int variant=0, bool row_values=False, "
      "bool col_values=False, Tensor? seed_tensor=None) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // 16x16-scaled W [N, K]: the rowwise copy and (if columnwise) the transposed copy
  // [K, N/2] whose codes and scales are exactly the transpose of the rowwise ones. values:
  // W's bf16 values [N, K] only (columnwise must be False: W^T's are their transpose).
  m.def(
      "quantize_weight_2d(Tensor w, bool columnwise, bool stochastic, int seed, int offset, "
      "Tensor? amax, int variant=0, bool values=False) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // e2m1(q) * f32(s_b) in FP32: what a GEMM reads (no global scale).
  m.def("block_dequantize_nvfp4(Tensor data, Tensor scale) -> Tensor");
  // E4M3 with one FP32 scale per row: (data [..., K], scale [..., 1]).
  m.def("quantize_fp8_rowwise(Tensor x) -> (Tensor, Tensor)");
  // NUMERICS 8 on [M, K/2] and [N, K/2] codes: alpha * deq(A) @ deq(B)^T (+ bias) in FP32,
  // then out_dtype; alpha = S_dec(a_amax) * S_dec(b_amax), applied once.
  m.def(
      "nvfp4_gemm(Tensor a_data, Tensor a_scale, Tensor a_amax, Tensor b_data, "
      "Tensor b_scale, Tensor b_amax, Tensor? bias, ScalarType out_dtype) -> Tensor");
  // NUMERICS 8 on operands already block-dequantized: a [M, K] and b [N, K] bf16 values
  // e2m1 * s_b (what the quantizers write in values mode), alpha * a @ b^T in FP32, then
  // out_dtype (bf16 or FP32). No bias. CUDA (built where cuBLASLt was found): alpha from
  // a one-thread launch, then one cuBLASLt call reading it from memory
  // (csrc/nvfp4_gemm_values_cuda.cpp).
  m.def(
      "nvfp4_gemm_values(Tensor a, Tensor a_amax, Tensor b, Tensor b_amax, "
      "ScalarType out_dtype) -> Tensor");
  // Element functions of nvfp4_math.h, for exhaustive tests (CPU only).
  m.def("philox(int seed, Tensor counters) -> Tensor");
  m.def("e4m3_round(Tensor v) -> Tensor");
  m.def("e2m1_round(Tensor v, Tensor? words) -> Tensor");
  m.def("rht(Tensor x, int rht_mask) -> Tensor");
}

namespace {

// The CPU kernels with the schemas' `variant`: one implementation, so only checked.
lowprec::Triple cpu_quantize_nvfp4(const at::Tensor& x, int64_t block_rows, int64_t rht_mask,
                                   bool stochastic, int64_t seed, int64_t offset,
                                   const std::optional<at::Tensor>& amax, int64_t variant) {
  lowprec::check_variant(variant, lowprec::kNvfp4Variants, "quantize_nvfp4");
  return lowprec::cpu::quantize_nvfp4(x, block_rows, rht_mask, stochastic, seed, offset, amax);
}

lowprec::TwoTriples cpu_quantize_row_col(const at::Tensor& x, int64_t rht_mask, bool rowwise,
                                         bool columnwise, bool row_stochastic,
                                         bool col_stochastic, int64_t seed, int64_t row_offset,
                                         int64_t col_offset,
                                         const std::optional<at::Tensor>& row_amax,
                                         const std::optional<at::Tensor>& col_amax,
                                         int64_t variant, bool row_values, bool col_values,
                                         const std::optional<at::Tensor>& seed_tensor) {
  lowprec::check_variant(variant, lowprec::kRowColVariants, "quantize_row_col");
  // On the CPU the key in memory is read here, at the call: the same key the kernel reads.
  const int64_t key = seed_tensor.has_value()
                          ? lowprec::read_seed_tensor(*seed_tensor, x, "quantize_row_col")
                          : seed;
  return lowprec::cpu::quantize_row_col(x, rht_mask, rowwise, columnwise, row_stochastic,
                                        col_stochastic, key, row_offset, col_offset, row_amax,
                                        col_amax, row_values, col_values);
}

lowprec::TwoTriples cpu_quantize_weight_2d(const at::Tensor& w, bool columnwise, bool stochastic,
                                           int64_t seed, int64_t offset,
                                           const std::optional<at::Tensor>& amax,
                                           int64_t variant, bool values) {
  lowprec::check_variant(variant, lowprec::kWeight2dVariants, "quantize_weight_2d");
  return lowprec::cpu::quantize_weight_2d(w, columnwise, stochastic, seed, offset, amax, values);
}

}  // namespace

TORCH_LIBRARY_IMPL(lowprec_C, CPU, m) {
  m.impl("quantize_nvfp4", &cpu_quantize_nvfp4);
  m.impl("quantize_row_col", &cpu_quantize_row_col);
  m.impl("quantize_weight_2d", &cpu_quantize_weight_2d);
  m.impl("block_dequantize_nvfp4", &lowprec::cpu::block_dequantize_nvfp4);
  m.impl("quantize_fp8_rowwise", &lowprec::cpu::quantize_fp8_rowwise);
  m.impl("nvfp4_gemm", &lowprec::cpu::nvfp4_gemm);
  m.impl("nvfp4_gemm_values", &lowprec::cpu::nvfp4_gemm_values);
  m.impl("philox", &lowprec::cpu::philox);
  m.impl("e4m3_round", &lowprec::cpu::e4m3_round);
  m.impl("e2m1_round", &lowprec::cpu::e2m1_round);
  m.impl("rht", &lowprec::cpu::rht);
}

// An importable, empty Python module: `import lowprec._lowprec_C` loads the library.
extern "C" PyObject* PyInit__lowprec_C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_lowprec_C", nullptr, -1,
                                          nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
