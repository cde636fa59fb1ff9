// Host-side launchers of the CUDA kernels in quantize.cu. Plain pointers and sizes, no
// torch types: quantize.cu depends on nothing but nvfp4_math.h and the CUDA runtime, so
// .ci/nvcc_check.sh can compile it on a machine whose torch has no CUDA headers.
// cuda_ops.cpp wraps these in tensor ops.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace lowprec::cuda {

enum class InputType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// Where a kernel finds the global amax: a caller-given FP32 value (canonicalized: non-
// finite becomes NaN), or the max abs bits an amax launch accumulated (see abs_bits in
// nvfp4_math.h). Exactly one is non-null.
struct AmaxIn {
  const float* given;
  const uint32_t* bits;
};

struct Rounding {
  bool stochastic;
  uint64_t seed;
  uint64_t offset;  // Philox counter of flat element 0
};

// Where a quantization writes: data [rows, cols/2], scale [rows, cols/16] (E4M3 bytes),
// and the amax it used (FP32, one value).
struct QuantOut {
  uint8_t* data;
  uint8_t* scale;
  float* amax;
};

// max |x| (after the optional RHT along the last dim) of x [rows, cols], as abs bits
// max-accumulated into *amax_bits (which the caller zeroes first).
cudaError_t launch_amax(const void* x, InputType type, int64_t rows, int64_t cols,
                        int32_t rht_mask, uint32_t* amax_bits, cudaStream_t stream);

// 1x16 (block_rows 1) or 16x16 (block_rows 16) quantization of x [rows, cols] along the
// last dim, with the optional RHT (rht_mask >= 0) along it. For 16x16, `transposed` (if
// its data is non-null) receives the transposed copy [cols, rows/2] whose codes and
// scales are exactly the transpose of `out`'s (NUMERICS 5); ignored for 1x16.
cudaError_t launch_quantize(const void* x, InputType type, int64_t rows, int64_t cols,
                            int block_rows, int32_t rht_mask, AmaxIn amax, Rounding rounding,
                            QuantOut out, QuantOut transposed, cudaStream_t stream);

// For x [rows, cols]: max |x| into amax_bits[0] and max |RHT(columns of x)| (RHT along
// the rows, zero-padded to a multiple of 16) into amax_bits[1].
cudaError_t launch_row_col_amax(const void* x, InputType type, int64_t rows, int64_t cols,
                               int32_t rht_mask, uint32_t* amax_bits, cudaStream_t stream);

// One pass over x [rows, cols]: the rowwise copy (no RHT) into row, and the columnwise
// copy of the transpose [cols, padded_rows] (RHT along rows when rht_mask >= 0) into col;
// rowwise / columnwise say which of the two to write.
cudaError_t launch_quantize_row_col(const void* x, InputType type, int64_t rows, int64_t cols,
                                   int32_t rht_mask, bool rowwise, bool columnwise,
                                   AmaxIn row_amax, AmaxIn col_amax, Rounding row_rounding,
                                   Rounding col_rounding, QuantOut row, QuantOut col,
                                   cudaStream_t stream);

}  // namespace lowprec::cuda
