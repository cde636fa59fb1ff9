// A CPU stand-in for the small part of CUDA that csrc/quantize.cu uses, so that the real
// kernels (their indexing, shared-memory staging, shuffles, grid-stride loops, packing)
// run on a machine without a GPU: one std::thread per CUDA thread, thread blocks one
// after the other, __syncthreads / __syncwarp as std::barrier, shuffles through a
// per-warp exchange buffer. Only semantics are modelled, never timing or the memory
// model; device intrinsics of nvfp4_math.h take their host paths here.
#pragma once

#include <stdint.h>
#include <string.h>

#include <barrier>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned x = 0, y = 0, z = 0;
};
struct float4 {
  float x, y, z, w;
};
struct uint4 {
  unsigned x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) {
  return uint4{a, b, c, d};
}

using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
using cudaStream_t = void*;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount };

// A "GPU" of 2 SMs holding 1 block each: grids stay tiny, so every kernel's grid-stride
// loop runs many iterations per block. A test may ask for more SMs (sim::sms), e.g. for
// amax launches with more partials than a block has threads.
namespace sim {
inline int sms = 2;
}
inline cudaError_t cudaGetDevice(int* device) { *device = 0; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) { *value = sim::sms; return cudaSuccess; }
template <typename Kernel>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel, int, size_t) {
  *blocks = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

inline thread_local dim3 threadIdx, blockIdx, gridDim;

namespace sim {

struct Warp {
  explicit Warp(int lanes) : barrier(lanes) {}
  std::barrier<> barrier;
  uint32_t slots[32] = {};
};

struct Block {
  explicit Block(int threads) : barrier(threads) {
    for (int w = 0; w * 32 < threads; ++w) {
      int lanes = threads - 32 * w < 32 ? threads - 32 * w : 32;
      warps.push_back(std::make_unique<Warp>(lanes));
    }
  }
  std::barrier<> barrier;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline Block* current_block = nullptr;  // one block runs at a time
inline std::mutex atomic_mutex;

inline Warp& my_warp() { return *current_block->warps[threadIdx.x / 32]; }

template <typename Kernel, typename... Args>
void launch(Kernel kernel, unsigned grid, unsigned threads, Args... args) {
  for (unsigned b = 0; b < grid; ++b) {
    Block block(static_cast<int>(threads));
    current_block = &block;
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([=] {
        threadIdx = dim3{t, 0, 0};
        blockIdx = dim3{b, 0, 0};
        gridDim = dim3{grid, 1, 1};
        kernel(args...);
      });
    }
    for (auto& thread : pool) thread.join();
    current_block = nullptr;
  }
}

}  // namespace sim

#define LP_LAUNCH(kernel, grid, threads, stream, ...) \
  ((void)(stream), sim::launch(kernel, (grid), (threads), __VA_ARGS__))

inline void __syncthreads() { sim::current_block->barrier.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xFFFFFFFFu) { sim::my_warp().barrier.arrive_and_wait(); }

inline uint32_t __shfl_xor_sync(unsigned, uint32_t value, int lane_mask) {
  sim::Warp& w = sim::my_warp();
  unsigned lane = threadIdx.x & 31u;
  w.slots[lane] = value;
  w.barrier.arrive_and_wait();
  uint32_t other = w.slots[lane ^ static_cast<unsigned>(lane_mask)];
  w.barrier.arrive_and_wait();
  return other;
}

inline uint32_t __reduce_max_sync(unsigned, uint32_t value) {
  sim::Warp& w = sim::my_warp();
  w.slots[threadIdx.x & 31u] = value;
  w.barrier.arrive_and_wait();
  uint32_t m = 0u;
  for (uint32_t s : w.slots) m = s > m ? s : m;
  w.barrier.arrive_and_wait();
  return m;
}

inline unsigned atomicMax(unsigned* address, unsigned value) {
  std::lock_guard<std::mutex> lock(sim::atomic_mutex);
  unsigned old = *address;
  if (value > old) *address = value;
  return old;
}

template <typename T>
T __ldcs(const T* p) { return *p; }

inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

struct __half {
  unsigned short bits;
};
inline __half __ushort_as_half(unsigned short bits) { return __half{bits}; }

// IEEE binary16 -> binary32, exact.
inline float __half2float(__half h) {
  uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  uint32_t exponent = (h.bits >> 10) & 0x1Fu, mantissa = h.bits & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1Fu) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0u) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0u) {
    bits = sign;
  } else {  // subnormal: mantissa * 2^-24, exact in FP32
    float f = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    memcpy(&bits, &f, sizeof bits);
    bits |= sign;
  }
  return __uint_as_float(bits);
}
