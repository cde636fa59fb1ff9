// Host-side launcher of the one kernel of csrc/nvfp4_gemm_values.cu: plain pointers, no
// torch types, so .ci/nvcc_check.sh compiles the kernel without torch's CUDA headers.
// csrc/nvfp4_gemm_values_cuda.cpp (the op, one cuBLASLt call) uses it.
#pragma once

#include <cuda_runtime.h>

namespace lowprec::cuda {

// scalars[0] = alpha = S_dec(a_amax) * S_dec(b_amax) (NUMERICS 8, FP32, one rounding),
// scalars[1] = beta = 0: the two device scalars cuBLASLt reads in its device pointer
// mode. One thread; the amaxes are FP32 device scalars.
cudaError_t launch_gemm_scalars(const float* a_amax, const float* b_amax, float* scalars,
                                cudaStream_t stream);

}  // namespace lowprec::cuda
