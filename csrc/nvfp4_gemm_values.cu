// The device half of nvfp4_gemm_values (csrc/nvfp4_gemm_values_cuda.cpp): alpha for a
// cuBLASLt call that reads it from memory, computed where the amaxes are, so the GEMM
// needs no host round trip.
#include "cuda_launch.h"
#include "nvfp4_gemm_values_cuda.h"
#include "nvfp4_math.h"

namespace lowprec::cuda {
namespace {

__global__ void gemm_scalars_kernel(const float* a_amax, const float* b_amax, float* scalars) {
  // The epilogue's alpha (kernels/nvfp4_gemm.py _epilogue, the CPU op's): same functions.
  scalars[0] = mul_rn(global_decode_scale(*a_amax), global_decode_scale(*b_amax));
  scalars[1] = 0.0f;
}

}  // namespace

cudaError_t launch_gemm_scalars(const float* a_amax, const float* b_amax, float* scalars,
                                cudaStream_t stream) {
  LP_LAUNCH(gemm_scalars_kernel, 1, 1, stream, a_amax, b_amax, scalars);
  return cudaGetLastError();
}

}  // namespace lowprec::cuda
