// nvfp4_gemm_values on CUDA: NUMERICS 8's GEMM on operands the quantizers wrote as bf16
// values (e2m1 * s_b, exact), in one cuBLASLt call. cuBLASLt multiplies bf16 on the tensor
// cores with FP32 accumulation, scales the FP32 accumulator by alpha and rounds once to
// the output dtype, so nothing is rounded before alpha; alpha comes from device memory
// (cuBLASLt's device pointer mode), written by a one-thread launch from the two amaxes.
// Against the emulation's other path (torch.mm with an FP32 result, then an epilogue
// launch) it writes no FP32 product and reads none back.
//
// Built into the CUDA extension only where setup.py found cuBLASLt's header and library
// (its CUBLASLT_SOURCES); lowprec/_C.py cublaslt_reason asks the dispatcher whether this
// kernel is registered.
#include "nvfp4_gemm_values_cuda.h"
#include "ops.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cublasLt.h>
#include <stdint.h>

#include <array>
#include <map>
#include <mutex>
#include <tuple>

namespace lowprec::cuda_ops {
namespace {

// cuBLASLt's recommended workspace on Hopper; from torch's caching allocator, so a call
// allocates nothing from the driver once the first one has run.
constexpr int64_t kWorkspaceBytes = int64_t{32} << 20;
constexpr int kMaxDevices = 64;

void check_cublas(cublasStatus_t status, const char* what) {
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, "nvfp4_gemm_values: ", what, " failed: ",
              cublasLtGetStatusName(status), " (", cublasLtGetStatusString(status), ")");
}

// One cuBLASLt handle per device, made on its first use and kept for the process (as
// torch keeps its own).
cublasLtHandle_t handle_of(int device) {
  TORCH_CHECK(device >= 0 && device < kMaxDevices, "nvfp4_gemm_values: device index ",
              device, " out of range");
  static std::array<cublasLtHandle_t, kMaxDevices> handles{};
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (handles[device] == nullptr) check_cublas(cublasLtCreate(&handles[device]), "cublasLtCreate");
  return handles[device];
}

cudaDataType_t cuda_type(at::ScalarType dtype) {
  // check_gemm_values_args allowed only bf16 and FP32.
  return dtype == at::kBFloat16 ? CUDA_R_16BF : CUDA_R_32F;
}

// The largest power of two (at most 256) dividing the address: what cuBLASLt may assume
// of a pointer when it picks an algorithm.
uint32_t alignment_of(const void* p) {
  uint32_t alignment = 256;
  while (alignment > 1 && reinterpret_cast<uintptr_t>(p) % alignment != 0) alignment /= 2;
  return alignment;
}

// The descriptors of one call, destroyed with it.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  ~Descriptors() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// What cuBLASLt's heuristic depends on in a call: the sizes, b's layout, the output
// dtype, the device and the alignments of b, a and out.
using AlgoKey = std::tuple<int64_t, int64_t, int64_t, bool, int, int, uint32_t, uint32_t, uint32_t>;

template <typename T>
void set_op(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, T value) {
  check_cublas(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof value),
               "cublasLtMatmulDescSetAttribute");
}

template <typename T>
void set_preference(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attribute,
                    T value) {
  check_cublas(cublasLtMatmulPreferenceSetAttribute(pref, attribute, &value, sizeof value),
               "cublasLtMatmulPreferenceSetAttribute");
}

// The algorithm cuBLASLt's heuristic picks for the call `desc` describes, asked once per
// key and kept: the heuristic costs host time, and a training step repeats a few shapes.
cublasLtMatmulAlgo_t algorithm_for(cublasLtHandle_t handle, const Descriptors& desc,
                                   const AlgoKey& key) {
  static std::mutex mutex;
  static std::map<AlgoKey, cublasLtMatmulAlgo_t> chosen;
  std::lock_guard<std::mutex> lock(mutex);
  auto known = chosen.find(key);
  if (known != chosen.end()) return known->second;

  struct Preference {
    cublasLtMatmulPreference_t p = nullptr;
    ~Preference() {
      if (p) cublasLtMatmulPreferenceDestroy(p);
    }
  } pref;
  check_cublas(cublasLtMatmulPreferenceCreate(&pref.p), "cublasLtMatmulPreferenceCreate");
  set_preference(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                 static_cast<uint64_t>(kWorkspaceBytes));
  const auto [m, n, k, n_major, out_dtype, device, b_align, a_align, out_align] = key;
  set_preference(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, b_align);
  set_preference(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, a_align);
  set_preference(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, out_align);
  set_preference(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, out_align);
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  check_cublas(cublasLtMatmulAlgoGetHeuristic(handle, desc.op, desc.a, desc.b, desc.d, desc.d,
                                              pref.p, 1, &heuristic, &found),
               "cublasLtMatmulAlgoGetHeuristic");
  TORCH_CHECK(found > 0, "nvfp4_gemm_values: cuBLASLt has no algorithm for M=", m, " N=", n,
              " K=", k, " (b ", n_major ? "N" : "K", "-major, output ",
              static_cast<at::ScalarType>(out_dtype), ", device ", device, ")");
  return chosen.emplace(key, heuristic.algo).first->second;
}

// out [M, N] = alpha * a [M, K] @ b [N, K]^T, row-major. cuBLASLt is column-major, so it
// computes out^T [N, M] = b @ a^T: its first operand is b, its second a. b may be K-major
// (rows of K, as the quantizers write X and dY) or N-major (a transposed view of a
// row-major [K, N], as dgrad passes W's values); anything else is copied.
at::Tensor nvfp4_gemm_values(const at::Tensor& a_in, const at::Tensor& a_amax,
                             const at::Tensor& b_in, const at::Tensor& b_amax,
                             at::ScalarType out_dtype) {
  check_gemm_values_args(a_in, a_amax, b_in, b_amax, out_dtype);
  TORCH_CHECK_VALUE(a_in.device() == b_in.device(), "nvfp4_gemm_values: a and b must be on one "
                    "device; got ", a_in.device(), " and ", b_in.device());
  c10::cuda::CUDAGuard guard(a_in.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t m = a_in.size(0), n = b_in.size(0), k = a_in.size(1);
  at::Tensor out = at::empty({m, n}, a_in.options().dtype(out_dtype));
  if (m == 0 || n == 0) return out;

  at::Tensor a = a_in.contiguous();
  at::Tensor b = b_in;
  const bool n_major = n > 1 && b.stride(0) == 1 && b.stride(1) == n;
  if (!n_major) b = b.contiguous();
  at::Tensor a_amax32 = a_amax.to(a.device(), at::kFloat).contiguous();
  at::Tensor b_amax32 = b_amax.to(a.device(), at::kFloat).contiguous();
  at::Tensor scalars = at::empty({2}, a.options().dtype(at::kFloat));
  C10_CUDA_CHECK(cuda::launch_gemm_scalars(a_amax32.const_data_ptr<float>(),
                                           b_amax32.const_data_ptr<float>(),
                                           scalars.mutable_data_ptr<float>(), stream));

  Descriptors desc;
  check_cublas(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
               "cublasLtMatmulDescCreate");
  set_op(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, n_major ? CUBLAS_OP_N : CUBLAS_OP_T);
  set_op(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  set_op(desc.op, CUBLASLT_MATMUL_DESC_POINTER_MODE, CUBLASLT_POINTER_MODE_DEVICE);
  // Column-major shapes: b as stored ([K, N] of leading dim K, or [N, K] of leading dim
  // N), a as [K, M] of leading dim K, out as [N, M] of leading dim N.
  if (n_major) {
    check_cublas(cublasLtMatrixLayoutCreate(&desc.a, CUDA_R_16BF, n, k, n), "layout of b");
  } else {
    check_cublas(cublasLtMatrixLayoutCreate(&desc.a, CUDA_R_16BF, k, n, k), "layout of b");
  }
  check_cublas(cublasLtMatrixLayoutCreate(&desc.b, CUDA_R_16BF, k, m, k), "layout of a");
  check_cublas(cublasLtMatrixLayoutCreate(&desc.d, cuda_type(out_dtype), n, m, n),
               "layout of out");

  const int device = a.get_device();
  cublasLtHandle_t handle = handle_of(device);
  const cublasLtMatmulAlgo_t algo = algorithm_for(
      handle, desc,
      AlgoKey{m, n, k, n_major, static_cast<int>(out_dtype), device,
              alignment_of(b.const_data_ptr()), alignment_of(a.const_data_ptr()),
              alignment_of(out.const_data_ptr())});
  at::Tensor workspace = at::empty({kWorkspaceBytes}, a.options().dtype(at::kByte));
  // beta = 0, also from device memory: C (= out, uninitialised) must not be read, as in
  // BLAS; tests/csrc/test_nvfp4_gemm_values.py hands the op NaN-filled memory to check.
  const float* alpha = scalars.const_data_ptr<float>();
  check_cublas(cublasLtMatmul(handle, desc.op, alpha, b.const_data_ptr(), desc.a,
                              a.const_data_ptr(), desc.b, alpha + 1, out.const_data_ptr(),
                              desc.d, out.mutable_data_ptr(), desc.d, &algo,
                              workspace.mutable_data_ptr(), kWorkspaceBytes, stream),
               "cublasLtMatmul");
  return out;
}

}  // namespace
}  // namespace lowprec::cuda_ops

TORCH_LIBRARY_IMPL(lowprec_C, CUDA, m) {
  m.impl("nvfp4_gemm_values", &lowprec::cuda_ops::nvfp4_gemm_values);
}
