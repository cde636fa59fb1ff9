// Host-side launchers of the CUDA kernels in quantize.cu. Plain pointers and sizes, no
// torch types: quantize.cu depends on nothing but nvfp4_math.h and the CUDA runtime, so
// .ci/nvcc_check.sh can compile it on a machine whose torch has no CUDA headers.
// cuda_ops.cpp wraps these in tensor ops.
//
// The global amax without a memset: an amax launch (a bounded, grid-stride grid of at
// most kMaxAmaxPartials thread blocks) stores one partial max |x| per thread block, as
// abs bits (see abs_bits in nvfp4_math.h), into a scratch array nobody has to clear; the
// quantize kernel that follows reduces those partials in its prologue (each thread
// block reads all of them). Same bits as one global max: max is associative.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace lowprec::cuda {

enum class InputType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// Most partials one amax launch writes per amax: the size, in 32-bit words, of each
// partials array a caller passes to launch_amax / launch_row_col_amax. An amax launch
// runs min(work, one full wave, kMaxAmaxPartials) thread blocks.
constexpr int kMaxAmaxPartials = 1024;

// Kernel variants (same bits, other schedules or instruction sequences; 0 is the
// original kernel). Mirrored by the counts in ops.h and by CUDA_VARIANTS in lowprec/_C.py.
constexpr int kQuantizeVariants = 4;  // the 1x16 kernel
constexpr int kTileVariants = 2;      // the 16x16 kernel (quantize_weight_2d)
constexpr int kRowColVariants = 4;

// Where a kernel finds the global amax: a caller-given FP32 value (canonicalized: non-
// finite becomes NaN), or the `count` partial max abs bits an amax launch stored
// (count 0: nothing to reduce, amax 0, e.g. for an empty tensor). `given` non-null wins.
struct AmaxIn {
  const float* given;
  const uint32_t* partials;
  int count;
};

struct Rounding {
  bool stochastic;
  uint64_t seed;
  uint64_t offset;  // Philox counter of flat element 0
  // When set, the key is read here when the kernel runs instead of `seed` (a device key
  // of lowprec.sr_keys: a CUDA graph's replay then uses the key written for it).
  const uint64_t* seed_ptr = nullptr;
};

// Where a quantization writes: data [rows, cols/2], scale [rows, cols/16] (E4M3 bytes),
// and the amax it used (FP32, one value). With `values` (values mode) the copy is written
// as its bf16 block-dequantized values e2m1(q) * f32(s_b) instead (no global scale; the
// same codes and scales, only the stores differ; nvfp4_math.h block_values16): data is
// then bf16 [rows, cols] (16-byte aligned) and scale is not used.
struct QuantOut {
  uint8_t* data;
  uint8_t* scale;
  float* amax;
  bool values;
};

// Partial max |x| (after the optional RHT along the last dim) of x [rows, cols]: one per
// thread block into partials[0, *count), *count <= kMaxAmaxPartials (0 when x is empty).
cudaError_t launch_amax(const void* x, InputType type, int64_t rows, int64_t cols,
                        int32_t rht_mask, uint32_t* partials, int* count, cudaStream_t stream);

// 1x16 (block_rows 1) or 16x16 (block_rows 16) quantization of x [rows, cols] along the
// last dim, with the optional RHT (rht_mask >= 0) along it. For 16x16, `transposed` (if
// its data is non-null) receives the transposed copy [cols, rows/2] whose codes and
// scales are exactly the transpose of `out`'s (NUMERICS 5); ignored for 1x16. `variant`
// picks the kernel: 0 <= variant < kQuantizeVariants (1x16) or kTileVariants (16x16).
// out.values (every variant): `out` as bf16 values; not with a transposed copy
// (cudaErrorInvalidValue: W^T's values are the transpose of W's).
cudaError_t launch_quantize(const void* x, InputType type, int64_t rows, int64_t cols,
                            int block_rows, int32_t rht_mask, AmaxIn amax, Rounding rounding,
                            QuantOut out, QuantOut transposed, int variant,
                            cudaStream_t stream);

// For x [rows, cols]: partial max |x| into row_partials and partial max |RHT(columns of
// x)| (RHT along the rows, zero-padded to a multiple of 16) into col_partials, one each
// per thread block, *count of each (<= kMaxAmaxPartials; 0 when x is empty).
cudaError_t launch_row_col_amax(const void* x, InputType type, int64_t rows, int64_t cols,
                               int32_t rht_mask, uint32_t* row_partials,
                               uint32_t* col_partials, int* count, cudaStream_t stream);

// One pass over x [rows, cols]: the rowwise copy (no RHT) into row, and the columnwise
// copy of the transpose [cols, padded_rows] (RHT along rows when rht_mask >= 0) into col;
// rowwise / columnwise say which of the two to write; row.values / col.values put that
// copy in values mode (the columnwise values are [cols, padded_rows], a padded token
// holding what its code dequantizes to). `variant`: 0 <= variant < kRowColVariants.
cudaError_t launch_quantize_row_col(const void* x, InputType type, int64_t rows, int64_t cols,
                                   int32_t rht_mask, bool rowwise, bool columnwise,
                                   AmaxIn row_amax, AmaxIn col_amax, Rounding row_rounding,
                                   Rounding col_rounding, QuantOut row, QuantOut col,
                                   int variant, cudaStream_t stream);

}  // namespace lowprec::cuda
