// NVFP4 quantization kernels for Hopper (sm_90a) and Blackwell (sm_100a).
//
// All element math comes from nvfp4_math.h, the header the CPU build tests against the
// reference bit for bit; this file only moves data. The kernels are memory bound, so
// the design is about bytes:
// * every thread owns whole 16-element blocks and reads them with 16-byte loads
//   (32 bytes per block in bf16/fp16, 64 in fp32), consecutive threads reading
//   consecutive blocks, so a warp reads whole 128-byte lines;
// * codes leave as one 8-byte store per block, consecutive lanes writing consecutive
//   8-byte pieces (full 32-byte sectors);
// * the fused rowwise + columnwise kernel reads each input byte once: a 64x64 tile goes
//   through shared memory, rows are quantized from registers, columns (with the RHT
//   along M) from the transposed shared tile, and the column codes are staged back
//   through shared memory so that their stores are coalesced as well;
// * grids are sized to fill the GPU once and loop over the work (grid-stride).
// The global amax needs its own pass when the caller does not supply it (it scales
// every block); launch_amax / launch_row_col_amax run a bounded grid (at most
// kMaxAmaxPartials blocks) that stores one partial max |x| (as bits) per thread block,
// and the quantize kernel reduces those partials in its prologue: two launches, no
// memset, no atomics.
//
// Variants (the `variant` argument; same bits, other schedules or instruction
// sequences, for a sweep on the GPU to pick from):
// * 1x16: 0 the original; 1 `prefetch`: software-pipelined, the next unit's 16-byte
//   loads are in flight while the current unit is quantized; 2 `prefetch_fastenc`: the
//   same with quantize16_fast (nvfp4_math.h: E2M1 rounding by magic-number additions,
//   the SR threshold without a division; bit-identical, checked exhaustively); 3
//   `fastenc`: the original schedule with quantize16_fast.
// * fused rowwise + columnwise: 0 the original; 1 `prefetch`: the next tile's loads are
//   issued before the current tile is quantized; 2 `prefetch_fastenc`: with
//   quantize16_fast as well; 3 `fastenc`: the original schedule with quantize16_fast.
// * 16x16 (quantize_weight_2d): 0 the original; 1 `fastenc`.
//
// Values mode (QuantOut::values, per copy; every variant): a copy is written as its bf16
// block-dequantized values e2m1(q) * f32(s_b) (nvfp4_math.h block_values16) instead of
// codes and scales: the same codes, scales and random words, only the store of each
// 16-element block differs (32 bytes, two 16-byte stores; the lanes that wrote
// consecutive 8-byte code pieces write consecutive 32-byte value pieces). The kernels
// take it as a template flag (kValues) so that the packed instances stay as they were;
// the fused kernel's values instance decides per copy at run time.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda_launch.h"  // LP_LAUNCH: every launch, so that tests/csrc/cuda_sim runs them
#include "nvfp4_math.h"
#include "quantize_cuda.h"

namespace lowprec::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;
// The 1x16 kernel asks for 4 blocks (1024 threads) per SM, i.e. at most 64 registers,
// which it fits without spilling: >= 32 KB of loads in flight per SM, about Hopper's
// bandwidth-latency product. The fused and 2-D kernels need ~72 registers (3 blocks per
// SM); capping them at 64 spills, so they are left uncapped. Unmeasured on hardware.
constexpr int kMinBlocks = 4;
// The 1x16 prefetch variant holds the next unit's raw bytes too (8 registers for 16-bit
// input, 16 for fp32): 3 blocks per SM (at most 80 registers) with the original
// encoders; with the fast ones it fits kMinBlocks.
constexpr int kPrefetchMinBlocks = 3;

// ---------------------------------------------------------------------------------
// Loads: 16 consecutive elements starting at element `first` (a multiple of 16) as FP32
// ---------------------------------------------------------------------------------

__device__ __forceinline__ void unpack2(uint32_t w, float& lo, float& hi,
                                        InputType type) {
  if (type == InputType::kBFloat16) {  // bf16 -> fp32 is a 16-bit shift
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xFFFF0000u);
  } else {
    lo = __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xFFFFu)));
    hi = __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
  }
}

template <InputType kType>
__device__ __forceinline__ void load16(const void* x, int64_t first, float (&v)[16]) {
  if constexpr (kType == InputType::kFloat32) {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(x) + first);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float4 f = __ldcs(p + i);  // read once: streaming, evict first
      v[4 * i + 0] = f.x;
      v[4 * i + 1] = f.y;
      v[4 * i + 2] = f.z;
      v[4 * i + 3] = f.w;
    }
  } else {
    const uint4* p = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(x) + first);
    uint4 a = __ldcs(p), b = __ldcs(p + 1);  // both in flight before the first use
    uint32_t w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) unpack2(w[i], v[2 * i], v[2 * i + 1], kType);
  }
}

__device__ __forceinline__ void zero16(float (&v)[16]) {
#pragma unroll
  for (int j = 0; j < 16; ++j) v[j] = 0.0f;
}

// The raw bytes of one 16-element unit, loaded ahead of their use (the prefetch
// variants): 4 x 16 bytes for fp32, 2 x 16 bytes for bf16 / fp16. unpack_raw16 gives
// exactly load16's values.
template <InputType kType>
struct Raw16 {
  static constexpr int kLoads = kType == InputType::kFloat32 ? 4 : 2;
  uint4 q[kLoads];
};

template <InputType kType>
__device__ __forceinline__ void load_raw16(const void* x, int64_t first, Raw16<kType>& r) {
  constexpr int64_t kBytes = kType == InputType::kFloat32 ? 4 : 2;
  const uint4* p = reinterpret_cast<const uint4*>(static_cast<const char*>(x) + first * kBytes);
#pragma unroll
  for (int i = 0; i < Raw16<kType>::kLoads; ++i) r.q[i] = __ldcs(p + i);  // read once
}

template <InputType kType>
__device__ __forceinline__ void unpack_raw16(const Raw16<kType>& r, float (&v)[16]) {
  if constexpr (kType == InputType::kFloat32) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[4 * i + 0] = __uint_as_float(r.q[i].x);
      v[4 * i + 1] = __uint_as_float(r.q[i].y);
      v[4 * i + 2] = __uint_as_float(r.q[i].z);
      v[4 * i + 3] = __uint_as_float(r.q[i].w);
    }
  } else {
    const uint32_t w[8] = {r.q[0].x, r.q[0].y, r.q[0].z, r.q[0].w,
                           r.q[1].x, r.q[1].y, r.q[1].z, r.q[1].w};
#pragma unroll
    for (int i = 0; i < 8; ++i) unpack2(w[i], v[2 * i], v[2 * i + 1], kType);
  }
}

__device__ __forceinline__ void store_codes(uint8_t* data, int64_t byte_offset, uint64_t codes) {
  *reinterpret_cast<unsigned long long*>(data + byte_offset) = codes;  // 8-byte aligned
}

// Values mode: the block's 16 bf16 values at element `first` (a multiple of 16) of a bf16
// copy, as two 16-byte stores (32-byte aligned).
__device__ __forceinline__ void store_values(uint8_t* data, int64_t first, const EncodedBlock& e) {
  uint32_t w[8];
  block_values16(e.codes, e.scale, w);
  uint4* p = reinterpret_cast<uint4*>(data + first * 2);
  p[0] = make_uint4(w[0], w[1], w[2], w[3]);
  p[1] = make_uint4(w[4], w[5], w[6], w[7]);
}

// One encoded block of the copy `out` whose first element has flat index `first` in the
// copy ([rows, cols], row-major): its codes and scale byte, or, where values mode is
// compiled in (kValues) and this copy asks for it (out.values), its 16 bf16 values.
template <bool kValues>
__device__ __forceinline__ void store_block(const QuantOut& out, int64_t first,
                                            const EncodedBlock& e) {
  if (kValues && out.values) {
    store_values(out.data, first, e);
  } else {
    store_codes(out.data, first / 2, e.codes);
    out.scale[first / 16] = static_cast<uint8_t>(e.scale);
  }
}

// Max of the partials of `a` this thread reads: i = threadIdx.x + k * kThreads < a.count
// (<= kMaxAmaxPartials), a fixed, unrolled trip count, so all its loads are in flight
// at once.
// The Philox key of a rounding: the caller's value, or read from device memory when the
// caller gave it there (a device key: each CUDA graph replay reads the key of that replay).
// Only the baseline kernels of the ops that take a key in memory (quantize_row_col: the
// fused kernel and the rowwise 1x16 one) read it (kKeyInMemory); the variants, tuned to
// their register budgets, would spill with it, and the op runs the baseline for a key in
// memory (cuda_ops.cpp).
template <bool kKeyInMemory>
__device__ __forceinline__ uint64_t key_of(const Rounding& r) {
  if constexpr (kKeyInMemory) {
    return r.seed_ptr != nullptr ? *r.seed_ptr : r.seed;
  } else {
    return r.seed;
  }
}

__device__ __forceinline__ uint32_t partials_max(const AmaxIn& a) {
  static_assert(kMaxAmaxPartials % kThreads == 0, "partials split evenly over a block");
  uint32_t m = 0u;
  if (a.given == nullptr) {
#pragma unroll
    for (int k = 0; k < kMaxAmaxPartials / kThreads; ++k) {
      const int i = k * kThreads + static_cast<int>(threadIdx.x);
      if (i < a.count) m = max_u32(m, a.partials[i]);
    }
  }
  return m;
}

__device__ __forceinline__ float amax_of(const AmaxIn& a, uint32_t partials_bits) {
  return a.given != nullptr ? canonical_amax(*a.given) : amax_from_abs_bits(partials_bits);
}

// The amaxes of a and b, in every thread of the block: the block reduces the partials
// together. Every thread calls it, once per kernel, in the prologue.
__device__ __forceinline__ void block_read_amaxes(const AmaxIn& a, const AmaxIn& b,
                                                  float& amax_a, float& amax_b) {
  __shared__ uint32_t warp_max[2][kWarps];
  uint32_t ma = __reduce_max_sync(kFullMask, partials_max(a));
  uint32_t mb = __reduce_max_sync(kFullMask, partials_max(b));
  if ((threadIdx.x & 31) == 0) {
    warp_max[0][threadIdx.x >> 5] = ma;
    warp_max[1][threadIdx.x >> 5] = mb;
  }
  __syncthreads();
  ma = 0u;
  mb = 0u;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    ma = max_u32(ma, warp_max[0][w]);
    mb = max_u32(mb, warp_max[1][w]);
  }
  amax_a = amax_of(a, ma);
  amax_b = amax_of(b, mb);
}

__device__ __forceinline__ float block_read_amax(const AmaxIn& a) {
  __shared__ uint32_t warp_max[kWarps];
  uint32_t m = __reduce_max_sync(kFullMask, partials_max(a));
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = m;
  __syncthreads();
  m = 0u;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) m = max_u32(m, warp_max[w]);
  return amax_of(a, m);
}

// Max of v over the thread block into partials[blockIdx.x] (a plain store: each block
// owns its word, so nothing needs clearing first).
__device__ __forceinline__ void block_max_to_partial(uint32_t v, uint32_t* partials) {
  __shared__ uint32_t warp_max[kWarps];
  v = __reduce_max_sync(kFullMask, v);
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t m = 0u;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m = max_u32(m, warp_max[w]);
    partials[blockIdx.x] = m;
  }
  __syncthreads();  // warp_max is reused by a second call
}

// ---------------------------------------------------------------------------------
// 1x16 along the last dim, and the global amax
// ---------------------------------------------------------------------------------

struct RowsArgs {
  const void* x;
  int64_t rows, cols;
  int32_t rht_mask;
  AmaxIn amax;
  Rounding rounding;
  QuantOut out;
  QuantOut col;  // 16x16 only: the transposed copy [cols, rows/2]; col.data null for none
  uint32_t* partials;  // amax launches: one word per thread block
};

// Unit u is the 16 elements [16u, 16u + 16) in row-major order: for 1x16 blocks the
// flat index is all a thread needs (row boundaries fall between units since cols % 16 == 0).
template <InputType kType, bool kAmaxOnly, bool kFast, bool kValues>
__device__ __forceinline__ void rows_1x16(const RowsArgs& a) {
  const int64_t units = a.rows * (a.cols / 16);
  TensorScales scales{0.0f, 0.0f};
  if constexpr (!kAmaxOnly) {
    float amax = block_read_amax(a.amax);
    scales = tensor_scales(amax);
    if (blockIdx.x == 0 && threadIdx.x == 0) *a.out.amax = amax;
  }
  uint32_t acc = 0u;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; u < units;
       u += stride) {
    float v[16];
    load16<kType>(a.x, u * 16, v);
    if (a.rht_mask >= 0) rht16_to_bf16(v, static_cast<uint32_t>(a.rht_mask));
    uint32_t block_bits = block_abs_bits(v);
    if constexpr (kAmaxOnly) {
      acc = max_u32(acc, block_bits);
    } else {
      const uint64_t counter0 = a.rounding.offset + static_cast<uint64_t>(u) * 4u;
      EncodedBlock e =
          kFast ? quantize16_fast(v, amax_from_abs_bits(block_bits), scales,
                                  a.rounding.stochastic, a.rounding.seed, counter0)
                : quantize16(v, amax_from_abs_bits(block_bits), scales, a.rounding.stochastic,
                             key_of<true>(a.rounding), counter0);
      store_block<kValues>(a.out, u * 16, e);
    }
  }
  if constexpr (kAmaxOnly) block_max_to_partial(acc, a.partials);
}

// Variant 0 (and the amax launch).
template <InputType kType, bool kAmaxOnly, bool kValues>
__global__ void __launch_bounds__(kThreads, kMinBlocks) rows_1x16_kernel(RowsArgs a) {
  rows_1x16<kType, kAmaxOnly, false, kValues>(a);
}

// Variant 3: the same schedule with quantize16_fast.
template <InputType kType, bool kValues>
__global__ void __launch_bounds__(kThreads, kMinBlocks) rows_1x16_fastenc_kernel(RowsArgs a) {
  rows_1x16<kType, false, true, kValues>(a);
}

// Variants 1 and 2 of the 1x16 kernel: software-pipelined. The 16-byte loads of the
// thread's next unit are issued before the current unit is quantized, so every thread
// always has loads in flight (the original issues them only at the top of each
// iteration and then waits). Same units per thread, same order, same math per unit.
template <InputType kType, bool kFast, bool kValues>
__global__ void __launch_bounds__(kThreads, kFast ? kMinBlocks : kPrefetchMinBlocks)
    rows_1x16_prefetch_kernel(RowsArgs a) {
  const int64_t units = a.rows * (a.cols / 16);
  const float amax = block_read_amax(a.amax);
  const TensorScales scales = tensor_scales(amax);
  if (blockIdx.x == 0 && threadIdx.x == 0) *a.out.amax = amax;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  int64_t u = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  Raw16<kType> next{};
  if (u < units) load_raw16<kType>(a.x, u * 16, next);
  for (; u < units; u += stride) {
    const Raw16<kType> cur = next;
    if (u + stride < units) load_raw16<kType>(a.x, (u + stride) * 16, next);
    float v[16];
    unpack_raw16<kType>(cur, v);
    if (a.rht_mask >= 0) rht16_to_bf16(v, static_cast<uint32_t>(a.rht_mask));
    const uint32_t block_bits = block_abs_bits(v);
    const uint64_t counter0 = a.rounding.offset + static_cast<uint64_t>(u) * 4u;
    EncodedBlock e =
        kFast ? quantize16_fast(v, amax_from_abs_bits(block_bits), scales,
                                a.rounding.stochastic, a.rounding.seed, counter0)
              : quantize16(v, amax_from_abs_bits(block_bits), scales, a.rounding.stochastic,
                           a.rounding.seed, counter0);
    store_block<kValues>(a.out, u * 16, e);
  }
}

// ---------------------------------------------------------------------------------
// 16x16 tiles (2-D weight scaling)
// ---------------------------------------------------------------------------------

// A warp covers 16 rows x 4 column blocks: lane = 4 * (row % 8) + tile, each lane owns
// rows r and r + 8 of its tile. Loads are 4 x 32 contiguous bytes per row (bf16), stores
// 4 x 8 contiguous bytes per row, and the lanes of one tile differ in lane bits 2-4, so
// three xor-shuffles give the tile amax. Consecutive warps take consecutive row groups
// of the same 4 tiles, so the transposed copy's 8-byte pieces (one per output row and
// row group) from neighbouring warps fill whole sectors.
//
// The transposed copy (NUMERICS 5: exactly the transpose of the rowwise codes and tile
// scales) goes through 512 bytes of shared memory per warp: each lane publishes its two
// rows of packed codes, then gathers two columns of its tile, 16 nibbles each.
template <InputType kType, bool kFast, bool kValues>
__device__ __forceinline__ void rows_16x16(const RowsArgs& a,
                                           unsigned long long (&staged)[kWarps][16][4]) {
  const int64_t blocks = a.cols / 16;
  const int64_t groups = a.rows / 16;
  const int64_t warp_units = groups * ((blocks + 3) / 4);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int tile = lane & 3, row8 = lane >> 2;
  const bool transposed = a.col.data != nullptr;
  float amax = block_read_amax(a.amax);
  TensorScales scales = tensor_scales(amax);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    *a.out.amax = amax;
    if (transposed) *a.col.amax = amax;
  }
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t wu = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
       wu < warp_units; wu += warps) {  // uniform across the warp: shuffles are safe
    const int64_t g = wu % groups;
    const int64_t b = (wu / groups) * 4 + tile;
    const int64_t r0 = g * 16 + row8, r1 = r0 + 8;
    const bool active = b < blocks;
    float v0[16], v1[16];
    if (active) {
      load16<kType>(a.x, r0 * a.cols + b * 16, v0);
      load16<kType>(a.x, r1 * a.cols + b * 16, v1);
      if (a.rht_mask >= 0) {
        rht16_to_bf16(v0, static_cast<uint32_t>(a.rht_mask));
        rht16_to_bf16(v1, static_cast<uint32_t>(a.rht_mask));
      }
    } else {
      zero16(v0);
      zero16(v1);
    }
    uint32_t t = max_u32(block_abs_bits(v0), block_abs_bits(v1));
    t = max_u32(t, __shfl_xor_sync(kFullMask, t, 4));
    t = max_u32(t, __shfl_xor_sync(kFullMask, t, 8));
    t = max_u32(t, __shfl_xor_sync(kFullMask, t, 16));
    EncodedBlock q0{0u, 0u}, q1{0u, 0u};
    if (active) {
      const float tile_amax = amax_from_abs_bits(t);
      const int64_t e0 = r0 * a.cols + b * 16, e1 = r1 * a.cols + b * 16;
      const uint64_t c0 = a.rounding.offset + static_cast<uint64_t>(e0 / 4);
      const uint64_t c1 = a.rounding.offset + static_cast<uint64_t>(e1 / 4);
      if constexpr (kFast) {
        q0 = quantize16_fast(v0, tile_amax, scales, a.rounding.stochastic, a.rounding.seed, c0);
        q1 = quantize16_fast(v1, tile_amax, scales, a.rounding.stochastic, a.rounding.seed, c1);
      } else {
        q0 = quantize16(v0, tile_amax, scales, a.rounding.stochastic, a.rounding.seed, c0);
        q1 = quantize16(v1, tile_amax, scales, a.rounding.stochastic, a.rounding.seed, c1);
      }
      store_block<kValues>(a.out, e0, q0);
      store_block<kValues>(a.out, e1, q1);
    }
    if (transposed) {  // uniform across the grid
      staged[warp][row8][tile] = q0.codes;
      staged[warp][row8 + 8][tile] = q1.codes;
      __syncwarp();
      if (active) {
        // Columns c = 2 * row8 and c + 1 of the tile: nibble c of each of its 16 rows.
        unsigned long long even = 0u, odd = 0u;
#pragma unroll
        for (int n = 0; n < 16; ++n) {
          unsigned long long row_codes = staged[warp][n][tile];
          even |= ((row_codes >> (8 * row8)) & 0xFu) << (4 * n);
          odd |= ((row_codes >> (8 * row8 + 4)) & 0xFu) << (4 * n);
        }
        const int64_t c = b * 16 + 2 * row8;  // output row of the transposed copy
        store_codes(a.col.data, c * (a.rows / 2) + g * 8, even);
        store_codes(a.col.data, (c + 1) * (a.rows / 2) + g * 8, odd);
        a.col.scale[c * groups + g] = static_cast<uint8_t>(q0.scale);
        a.col.scale[(c + 1) * groups + g] = static_cast<uint8_t>(q0.scale);
      }
      __syncwarp();  // `staged` is rewritten by the next unit
    }
  }
}

// Variant 0.
template <InputType kType, bool kValues>
__global__ void __launch_bounds__(kThreads) rows_16x16_kernel(RowsArgs a) {
  __shared__ unsigned long long staged[kWarps][16][4];
  rows_16x16<kType, false, kValues>(a, staged);
}

// quantize_weight_2d's variant 1: the same with quantize16_fast (left alone, ptxas takes
// up to 104 registers for it; capped at the original's 3 blocks per SM, 2 for fp32 input,
// it does not spill on sm_90a or sm_100a).
template <InputType kType, bool kValues>
__global__ void __launch_bounds__(kThreads, kType == InputType::kFloat32 ? 2 : 3)
    rows_16x16_fastenc_kernel(RowsArgs a) {
  __shared__ unsigned long long staged[kWarps][16][4];
  rows_16x16<kType, true, kValues>(a, staged);
}

// ---------------------------------------------------------------------------------
// Fused rowwise + columnwise (transposed, RHT along M) quantization
// ---------------------------------------------------------------------------------

constexpr int kTile = 64;             // 64 (M) x 64 (K) elements per tile
constexpr int kPitch = kTile + 4;     // FP32 words per shared row; +4 staggers the banks
static_assert(kTile * kTile / 16 == kThreads, "one row block and one column block per thread");

struct RowColArgs {
  const void* x;
  int64_t rows, cols, padded_rows;
  int32_t rht_mask;
  bool rowwise, columnwise;  // which copies to write
  AmaxIn row_amax, col_amax;
  Rounding row_rounding, col_rounding;
  QuantOut row, col;
  uint32_t* row_partials;  // amax launches: one word per thread block for each amax
  uint32_t* col_partials;
};

// Shared memory of the fused kernels.
struct RowColShared {
  float tile[kTile][kPitch];
  unsigned long long col_codes[kTile][4];
  uint8_t col_scales[kTile][4];
};

// What the fused kernels keep across tiles.
struct RowColState {
  TensorScales row_scales, col_scales;
  uint32_t row_acc, col_acc;  // amax launches: this thread's max |x| bits so far
};

__device__ __forceinline__ int64_t row_col_tiles_k(const RowColArgs& a) {
  return (a.cols + kTile - 1) / kTile;
}

// Where thread t's row-phase block of tile `tile_id` starts, and whether it is inside x
// (outside: the zero padding of M, or columns past K).
struct RowBlock {
  int64_t m0, k0, first;
  bool in_row;
};

__device__ __forceinline__ RowBlock row_block(const RowColArgs& a, int64_t tile_id,
                                              int64_t tiles_k) {
  const int t = threadIdx.x;
  const int r_local = t >> 2, cb = t & 3;  // row phase: row r_local, column block cb
  const int64_t m0 = (tile_id / tiles_k) * kTile, k0 = (tile_id % tiles_k) * kTile;
  const int64_t m = m0 + r_local, k = k0 + cb * 16;
  return RowBlock{m0, k0, m * a.cols + k, m < a.rows && k < a.cols};
}

// Prologue of the fused kernels: the two amaxes (quantize launches only).
template <bool kAmaxOnly>
__device__ __forceinline__ RowColState row_col_prologue(const RowColArgs& a) {
  RowColState s{{0.0f, 0.0f}, {0.0f, 0.0f}, 0u, 0u};
  if constexpr (!kAmaxOnly) {
    float row_amax = 0.0f, col_amax = 0.0f;
    block_read_amaxes(a.row_amax, a.col_amax, row_amax, col_amax);
    if (!a.rowwise) row_amax = 0.0f;
    if (!a.columnwise) col_amax = 0.0f;
    s.row_scales = tensor_scales(row_amax);
    s.col_scales = tensor_scales(col_amax);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      if (a.rowwise) *a.row.amax = row_amax;
      if (a.columnwise) *a.col.amax = col_amax;
    }
  }
  return s;
}

// One 64x64 tile, from thread t's row-phase block v (already loaded; zeros outside x):
// the rowwise block from registers, the columnwise blocks from the transposed shared
// tile (RHT along M), and the coalesced stores of the column codes.
template <InputType kType, bool kAmaxOnly, bool kFast, bool kValues, bool kKeyInMemory>
__device__ __forceinline__ void row_col_tile(const RowColArgs& a, const RowBlock& rb,
                                             float (&v)[16], RowColShared& sh,
                                             RowColState& s) {
  const int t = threadIdx.x;
  const int r_local = t >> 2, cb = t & 3;   // row phase: row r_local, column block cb
  const int c_local = t & 63, mb = t >> 6;  // column phase: column c_local, rows 16*mb..
  const int64_t m0 = rb.m0, k0 = rb.k0;
  if (rb.in_row && a.rowwise) {
    uint32_t bits = block_abs_bits(v);
    if constexpr (kAmaxOnly) {
      s.row_acc = max_u32(s.row_acc, bits);
    } else {
      const int64_t first = rb.first;
      const uint64_t counter0 = a.row_rounding.offset + static_cast<uint64_t>(first / 4);
      EncodedBlock e =
          kFast ? quantize16_fast(v, amax_from_abs_bits(bits), s.row_scales,
                                  a.row_rounding.stochastic,
                                  key_of<kKeyInMemory>(a.row_rounding), counter0)
                : quantize16(v, amax_from_abs_bits(bits), s.row_scales,
                             a.row_rounding.stochastic,
                             key_of<kKeyInMemory>(a.row_rounding), counter0);
      store_block<kValues>(a.row, first, e);
    }
  }
  float4* dst = reinterpret_cast<float4*>(&sh.tile[r_local][cb * 16]);
#pragma unroll
  for (int i = 0; i < 4; ++i) dst[i] = make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
  __syncthreads();

  // Column phase: 16 consecutive rows of one column (a warp reads 32 consecutive
  // columns of a shared row: no bank conflicts).
  const int64_t kc = k0 + c_local, mc = m0 + mb * 16;
  const bool in_col = kc < a.cols && mc < a.padded_rows;
  float w[16];
#pragma unroll
  for (int j = 0; j < 16; ++j) w[j] = sh.tile[mb * 16 + j][c_local];
  if (in_col && a.columnwise) {
    if (a.rht_mask >= 0) rht16_to_bf16(w, static_cast<uint32_t>(a.rht_mask));
    uint32_t bits = block_abs_bits(w);
    if constexpr (kAmaxOnly) {
      s.col_acc = max_u32(s.col_acc, bits);
    } else {
      const int64_t first = kc * a.padded_rows + mc;  // flat index in [K, M_pad]
      const uint64_t counter0 = a.col_rounding.offset + static_cast<uint64_t>(first / 4);
      EncodedBlock e =
          kFast ? quantize16_fast(w, amax_from_abs_bits(bits), s.col_scales,
                                  a.col_rounding.stochastic,
                                  key_of<kKeyInMemory>(a.col_rounding), counter0)
                : quantize16(w, amax_from_abs_bits(bits), s.col_scales,
                             a.col_rounding.stochastic,
                             key_of<kKeyInMemory>(a.col_rounding), counter0);
      sh.col_codes[c_local][mb] = e.codes;
      sh.col_scales[c_local][mb] = static_cast<uint8_t>(e.scale);
    }
  }
  __syncthreads();

  // Column stores: lane q of each group of 4 writes the q-th 8 bytes of a 32-byte run
  // of one output row (values mode: the q-th 32 bytes of a 128-byte run), so a warp
  // writes 8 full rows' worth of this tile.
  if constexpr (!kAmaxOnly) {
    const int k_local = t >> 2, q = t & 3;
    const int64_t kk = k0 + k_local, mm = m0 + q * 16;
    if (a.columnwise && kk < a.cols && mm < a.padded_rows) {
      store_block<kValues>(a.col, kk * a.padded_rows + mm,
                           EncodedBlock{sh.col_codes[k_local][q], sh.col_scales[k_local][q]});
    }
  }
  // The next tile first writes `tile` (last read before the barrier above) and then
  // `col_codes` only after its own first barrier, which every thread reaches after
  // finishing these stores.
}

// Each tile's loads are issued at the tile's start.
template <InputType kType, bool kAmaxOnly, bool kFast, bool kValues>
__device__ __forceinline__ void quantize_row_col_tiles(const RowColArgs& a, RowColShared& sh) {
  const int64_t tiles_k = row_col_tiles_k(a);
  const int64_t tiles = tiles_k * ((a.padded_rows + kTile - 1) / kTile);
  RowColState s = row_col_prologue<kAmaxOnly>(a);
  for (int64_t tile_id = blockIdx.x; tile_id < tiles; tile_id += gridDim.x) {
    const RowBlock rb = row_block(a, tile_id, tiles_k);
    float v[16];
    if (rb.in_row) {
      load16<kType>(a.x, rb.first, v);
    } else {
      zero16(v);
    }
    // The baseline (not kFast) reads a key in memory; fastenc does not (key_of).
    row_col_tile<kType, kAmaxOnly, kFast, kValues, !kFast>(a, rb, v, sh, s);
  }
  if constexpr (kAmaxOnly) {
    block_max_to_partial(s.row_acc, a.row_partials);
    block_max_to_partial(s.col_acc, a.col_partials);
  }
}

// Variant 0 (and the amax launch).
template <InputType kType, bool kAmaxOnly, bool kValues>
__global__ void __launch_bounds__(kThreads) quantize_row_col_kernel(RowColArgs a) {
  __shared__ RowColShared sh;
  quantize_row_col_tiles<kType, kAmaxOnly, false, kValues>(a, sh);
}

// Variant 3: the same schedule with quantize16_fast.
template <InputType kType, bool kValues>
__global__ void __launch_bounds__(kThreads) quantize_row_col_fastenc_kernel(RowColArgs a) {
  __shared__ RowColShared sh;
  quantize_row_col_tiles<kType, false, true, kValues>(a, sh);
}

// Blocks per SM the prefetch variants ask for without spilling (sm_90a and sm_100a):
// the original's 3 with the original encoders and 4 with the fast ones; 2 for fp32 input,
// whose loaded bytes take 16 registers.
constexpr int row_col_prefetch_min_blocks(InputType type, bool fast) {
  return type == InputType::kFloat32 ? 2 : fast ? 4 : 3;
}

// Variants 1 and 2: the next tile's 16-byte loads are issued before this tile is
// quantized, so they are in flight during its whole row and column phases. The tile
// coordinates step without a division (tile_id += gridDim.x as a carry on (tm, tk)),
// which pays for some of the registers of the loaded bytes.
template <InputType kType, bool kFast, bool kValues>
__global__ void __launch_bounds__(kThreads, row_col_prefetch_min_blocks(kType, kFast))
    quantize_row_col_prefetch_kernel(RowColArgs a) {
  __shared__ RowColShared sh;
  const int64_t tiles_k = row_col_tiles_k(a);
  const int64_t tiles = tiles_k * ((a.padded_rows + kTile - 1) / kTile);
  RowColState s = row_col_prologue<false>(a);
  const int r_local = threadIdx.x >> 2, cb = threadIdx.x & 3;
  // Tile (tm, tk) = (tile_id / tiles_k, tile_id % tiles_k); the step is gridDim.x tiles.
  const int64_t step_m = gridDim.x / tiles_k, step_k = gridDim.x % tiles_k;
  int64_t tm = blockIdx.x / tiles_k, tk = blockIdx.x % tiles_k;
  auto first_of = [&](int64_t m_tile, int64_t k_tile, bool& in_row) {
    const int64_t m = m_tile * kTile + r_local, k = k_tile * kTile + cb * 16;
    in_row = m < a.rows && k < a.cols;
    return m * a.cols + k;
  };
  Raw16<kType> next_raw{};
  bool next_in = false;
  int64_t next_first = first_of(tm, tk, next_in);
  if (blockIdx.x < tiles && next_in) load_raw16<kType>(a.x, next_first, next_raw);
  for (int64_t tile_id = blockIdx.x; tile_id < tiles; tile_id += gridDim.x) {
    const RowBlock rb{tm * kTile, tk * kTile, next_first, next_in};
    const Raw16<kType> raw = next_raw;
    tm += step_m;
    tk += step_k;
    if (tk >= tiles_k) {
      tk -= tiles_k;
      tm += 1;
    }
    next_first = first_of(tm, tk, next_in);
    if (tile_id + gridDim.x < tiles && next_in) load_raw16<kType>(a.x, next_first, next_raw);
    float v[16];
    if (rb.in_row) {
      unpack_raw16<kType>(raw, v);
    } else {
      zero16(v);
    }
    row_col_tile<kType, false, kFast, kValues, false>(a, rb, v, sh, s);
  }
}

// Writes the amax of an empty tensor (no kernel above runs).
__global__ void write_amax_kernel(AmaxIn a, float* out) {
  uint32_t m = 0u;
  if (a.given == nullptr) {
    for (int i = 0; i < a.count; ++i) m = max_u32(m, a.partials[i]);
  }
  *out = amax_of(a, m);
}

// ---------------------------------------------------------------------------------
// Launch helpers
// ---------------------------------------------------------------------------------

// Enough blocks to fill every SM once (the kernels loop over the rest), at most `work`.
template <typename Kernel>
int grid_size(Kernel kernel, int64_t work) {
  int device = 0, sms = 1, per_sm = 1;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0);
  int64_t full = static_cast<int64_t>(sms) * (per_sm > 0 ? per_sm : 1);
  return static_cast<int>(work < full ? work : full);
}

template <typename Kernel, typename Args>
cudaError_t launch(Kernel kernel, int64_t work, const Args& args, cudaStream_t stream) {
  if (work <= 0) return cudaSuccess;
  LP_LAUNCH(kernel, grid_size(kernel, work), kThreads, stream, args);
  return cudaGetLastError();
}

// An amax launch: a grid of at most kMaxAmaxPartials blocks (one partial each); the
// block count goes to *count, which the quantize launch then reads that many partials.
template <typename Kernel, typename Args>
cudaError_t launch_partials(Kernel kernel, int64_t work, const Args& args, int* count,
                            cudaStream_t stream) {
  *count = 0;
  if (work <= 0) return cudaSuccess;
  int grid = grid_size(kernel, work);
  if (grid > kMaxAmaxPartials) grid = kMaxAmaxPartials;
  *count = grid;
  LP_LAUNCH(kernel, grid, kThreads, stream, args);
  return cudaGetLastError();
}

cudaError_t write_amax(AmaxIn amax, float* out, cudaStream_t stream) {
  LP_LAUNCH(write_amax_kernel, 1, 1, stream, amax, out);
  return cudaGetLastError();
}

// Runs Launcher<type>::run(args...) for the input type known only at run time.
template <template <InputType> class Launcher, typename... A>
cudaError_t dispatch(InputType type, A&&... args) {
  switch (type) {
    case InputType::kFloat32: return Launcher<InputType::kFloat32>::run(args...);
    case InputType::kBFloat16: return Launcher<InputType::kBFloat16>::run(args...);
    case InputType::kFloat16: return Launcher<InputType::kFloat16>::run(args...);
  }
  return cudaErrorInvalidValue;
}

int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <InputType kType>
struct AmaxLauncher {
  static cudaError_t run(const RowsArgs& args, int* count, cudaStream_t stream) {
    int64_t units = args.rows * (args.cols / 16);
    return launch_partials(rows_1x16_kernel<kType, true, false>, div_up(units, kThreads), args,
                           count, stream);
  }
};

// The 1x16 or 16x16 kernel of `variant`, packed or values (kValues) instance.
template <InputType kType, bool kValues>
cudaError_t launch_rows(const RowsArgs& args, int block_rows, int variant, cudaStream_t stream) {
  if (block_rows == 16) {
    const int64_t warp_units = (args.rows / 16) * ((args.cols / 16 + 3) / 4);
    const int64_t blocks16 = div_up(warp_units, kWarps);
    switch (variant) {
      case 0: return launch(rows_16x16_kernel<kType, kValues>, blocks16, args, stream);
      case 1: return launch(rows_16x16_fastenc_kernel<kType, kValues>, blocks16, args, stream);
    }
    return cudaErrorInvalidValue;
  }
  const int64_t blocks = div_up(args.rows * (args.cols / 16), kThreads);
  switch (variant) {
    case 0: return launch(rows_1x16_kernel<kType, false, kValues>, blocks, args, stream);
    case 1: return launch(rows_1x16_prefetch_kernel<kType, false, kValues>, blocks, args, stream);
    case 2: return launch(rows_1x16_prefetch_kernel<kType, true, kValues>, blocks, args, stream);
    case 3: return launch(rows_1x16_fastenc_kernel<kType, kValues>, blocks, args, stream);
  }
  return cudaErrorInvalidValue;
}

template <InputType kType>
struct QuantizeLauncher {
  static cudaError_t run(const RowsArgs& args, int block_rows, int variant, cudaStream_t stream) {
    return args.out.values ? launch_rows<kType, true>(args, block_rows, variant, stream)
                           : launch_rows<kType, false>(args, block_rows, variant, stream);
  }
};

int64_t row_col_tiles(int64_t rows, int64_t cols) {
  int64_t padded = (rows + 15) / 16 * 16;
  return ((cols + kTile - 1) / kTile) * ((padded + kTile - 1) / kTile);
}

template <InputType kType>
struct RowColAmaxLauncher {
  static cudaError_t run(const RowColArgs& args, int* count, cudaStream_t stream) {
    return launch_partials(quantize_row_col_kernel<kType, true, false>,
                           row_col_tiles(args.rows, args.cols), args, count, stream);
  }
};

// The fused kernel of `variant`, packed or values (kValues: either copy may be values,
// each deciding at run time) instance.
template <InputType kType, bool kValues>
cudaError_t launch_row_col(const RowColArgs& args, int variant, cudaStream_t stream) {
  const int64_t tiles = row_col_tiles(args.rows, args.cols);
  switch (variant) {
    case 0: return launch(quantize_row_col_kernel<kType, false, kValues>, tiles, args, stream);
    case 1:
      return launch(quantize_row_col_prefetch_kernel<kType, false, kValues>, tiles, args, stream);
    case 2:
      return launch(quantize_row_col_prefetch_kernel<kType, true, kValues>, tiles, args, stream);
    case 3: return launch(quantize_row_col_fastenc_kernel<kType, kValues>, tiles, args, stream);
  }
  return cudaErrorInvalidValue;
}

template <InputType kType>
struct RowColQuantizeLauncher {
  static cudaError_t run(const RowColArgs& args, int variant, cudaStream_t stream) {
    const bool values = (args.rowwise && args.row.values) || (args.columnwise && args.col.values);
    return values ? launch_row_col<kType, true>(args, variant, stream)
                  : launch_row_col<kType, false>(args, variant, stream);
  }
};

static_assert(kQuantizeVariants == 4 && kRowColVariants == 4 && kTileVariants == 2,
              "the launchers above handle every variant");

}  // namespace

cudaError_t launch_amax(const void* x, InputType type, int64_t rows, int64_t cols,
                        int32_t rht_mask, uint32_t* partials, int* count, cudaStream_t stream) {
  const QuantOut none{nullptr, nullptr, nullptr, false};
  RowsArgs args{x, rows, cols, rht_mask, AmaxIn{nullptr, nullptr, 0}, Rounding{false, 0u, 0u},
                none, none, partials};
  return dispatch<AmaxLauncher>(type, args, count, stream);
}

cudaError_t launch_quantize(const void* x, InputType type, int64_t rows, int64_t cols,
                            int block_rows, int32_t rht_mask, AmaxIn amax, Rounding rounding,
                            QuantOut out, QuantOut transposed, int variant,
                            cudaStream_t stream) {
  if (variant < 0 || variant >= (block_rows == 16 ? kTileVariants : kQuantizeVariants)) {
    return cudaErrorInvalidValue;
  }
  if (out.values && transposed.data != nullptr) return cudaErrorInvalidValue;
  if (rows * cols == 0) {
    cudaError_t err = write_amax(amax, out.amax, stream);
    if (err != cudaSuccess || transposed.data == nullptr) return err;
    return write_amax(amax, transposed.amax, stream);
  }
  RowsArgs args{x, rows, cols, rht_mask, amax, rounding, out, transposed, nullptr};
  return dispatch<QuantizeLauncher>(type, args, block_rows, variant, stream);
}

cudaError_t launch_row_col_amax(const void* x, InputType type, int64_t rows, int64_t cols,
                               int32_t rht_mask, uint32_t* row_partials,
                               uint32_t* col_partials, int* count, cudaStream_t stream) {
  const QuantOut none{nullptr, nullptr, nullptr, false};
  const AmaxIn unused{nullptr, nullptr, 0};
  RowColArgs args{x, rows, cols, (rows + 15) / 16 * 16, rht_mask, true, true, unused, unused,
                  Rounding{false, 0u, 0u}, Rounding{false, 0u, 0u}, none, none, row_partials,
                  col_partials};
  return dispatch<RowColAmaxLauncher>(type, args, count, stream);
}

cudaError_t launch_quantize_row_col(const void* x, InputType type, int64_t rows, int64_t cols,
                                   int32_t rht_mask, bool rowwise, bool columnwise,
                                   AmaxIn row_amax, AmaxIn col_amax, Rounding row_rounding,
                                   Rounding col_rounding, QuantOut row, QuantOut col,
                                   int variant, cudaStream_t stream) {
  if (variant < 0 || variant >= kRowColVariants) return cudaErrorInvalidValue;
  if (rows * cols == 0) {
    cudaError_t err = rowwise ? write_amax(row_amax, row.amax, stream) : cudaSuccess;
    if (err != cudaSuccess || !columnwise) return err;
    return write_amax(col_amax, col.amax, stream);
  }
  RowColArgs args{x, rows, cols, (rows + 15) / 16 * 16, rht_mask, rowwise, columnwise,
                  row_amax, col_amax, row_rounding, col_rounding, row, col, nullptr, nullptr};
  return dispatch<RowColQuantizeLauncher>(type, args, variant, stream);
}

}  // namespace lowprec::cuda
