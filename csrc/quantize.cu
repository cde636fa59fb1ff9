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
// * grids are sized to fill the GPU once and loop over the work (grid-stride), which
//   also keeps the amax atomics to a few per block.
// The global amax needs its own pass when the caller does not supply it (it scales
// every block); launch_amax / launch_row_col_amax accumulate it as max |x| bits with one
// atomicMax per thread block.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "nvfp4_math.h"
#include "quantize_cuda.h"

// Kernel launches go through this macro so that tests/csrc/cuda_sim can run these very
// kernels on the CPU (one std::thread per CUDA thread) and check them against the
// reference without a GPU.
#if !defined(LP_LAUNCH)
#define LP_LAUNCH(kernel, grid, threads, stream, ...) \
  kernel<<<(grid), (threads), 0, (stream)>>>(__VA_ARGS__)
#endif

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

__device__ __forceinline__ void store_codes(uint8_t* data, int64_t byte_offset, uint64_t codes) {
  *reinterpret_cast<unsigned long long*>(data + byte_offset) = codes;  // 8-byte aligned
}

__device__ __forceinline__ float read_amax(const AmaxIn& a) {
  return a.given != nullptr ? canonical_amax(*a.given) : amax_from_abs_bits(*a.bits);
}

// Max of v over the thread block into *out (one atomic per block).
__device__ __forceinline__ void block_max_to_global(uint32_t v, uint32_t* out) {
  __shared__ uint32_t warp_max[kWarps];
  v = __reduce_max_sync(kFullMask, v);
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t m = 0u;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m = max_u32(m, warp_max[w]);
    atomicMax(reinterpret_cast<unsigned int*>(out), m);
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
  uint32_t* amax_bits;
};

// Unit u is the 16 elements [16u, 16u + 16) in row-major order: for 1x16 blocks the
// flat index is all a thread needs (row boundaries fall between units since cols % 16 == 0).
template <InputType kType, bool kAmaxOnly>
__global__ void __launch_bounds__(kThreads, kMinBlocks) rows_1x16_kernel(RowsArgs a) {
  const int64_t units = a.rows * (a.cols / 16);
  TensorScales scales{0.0f, 0.0f};
  if constexpr (!kAmaxOnly) {
    float amax = read_amax(a.amax);
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
      EncodedBlock e = quantize16(v, amax_from_abs_bits(block_bits), scales,
                                  a.rounding.stochastic, a.rounding.seed,
                                  a.rounding.offset + static_cast<uint64_t>(u) * 4u);
      store_codes(a.out.data, u * 8, e.codes);
      a.out.scale[u] = static_cast<uint8_t>(e.scale);
    }
  }
  if constexpr (kAmaxOnly) block_max_to_global(acc, a.amax_bits);
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
template <InputType kType>
__global__ void __launch_bounds__(kThreads) rows_16x16_kernel(RowsArgs a) {
  __shared__ unsigned long long staged[kWarps][16][4];
  const int64_t blocks = a.cols / 16;
  const int64_t groups = a.rows / 16;
  const int64_t warp_units = groups * ((blocks + 3) / 4);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int tile = lane & 3, row8 = lane >> 2;
  const bool transposed = a.col.data != nullptr;
  float amax = read_amax(a.amax);
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
      q0 = quantize16(v0, tile_amax, scales, a.rounding.stochastic, a.rounding.seed,
                      a.rounding.offset + static_cast<uint64_t>(e0 / 4));
      q1 = quantize16(v1, tile_amax, scales, a.rounding.stochastic, a.rounding.seed,
                      a.rounding.offset + static_cast<uint64_t>(e1 / 4));
      store_codes(a.out.data, e0 / 2, q0.codes);
      store_codes(a.out.data, e1 / 2, q1.codes);
      a.out.scale[e0 / 16] = static_cast<uint8_t>(q0.scale);
      a.out.scale[e1 / 16] = static_cast<uint8_t>(q1.scale);
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
  uint32_t* amax_bits;  // [2]: rowwise, columnwise
};

template <InputType kType, bool kAmaxOnly>
__global__ void __launch_bounds__(kThreads) quantize_row_col_kernel(RowColArgs a) {
  __shared__ float tile[kTile][kPitch];
  __shared__ unsigned long long col_codes[kTile][4];
  __shared__ uint8_t col_scales[kTile][4];

  const int t = threadIdx.x;
  const int r_local = t >> 2, cb = t & 3;   // row phase: row r_local, column block cb
  const int c_local = t & 63, mb = t >> 6;  // column phase: column c_local, rows 16*mb..
  const int64_t tiles_k = (a.cols + kTile - 1) / kTile;
  const int64_t tiles = tiles_k * ((a.padded_rows + kTile - 1) / kTile);

  TensorScales row_scales{0.0f, 0.0f}, col_scales_t{0.0f, 0.0f};
  if constexpr (!kAmaxOnly) {
    float row_amax = a.rowwise ? read_amax(a.row_amax) : 0.0f;
    float col_amax = a.columnwise ? read_amax(a.col_amax) : 0.0f;
    row_scales = tensor_scales(row_amax);
    col_scales_t = tensor_scales(col_amax);
    if (blockIdx.x == 0 && t == 0) {
      if (a.rowwise) *a.row.amax = row_amax;
      if (a.columnwise) *a.col.amax = col_amax;
    }
  }
  uint32_t row_acc = 0u, col_acc = 0u;

  for (int64_t tile_id = blockIdx.x; tile_id < tiles; tile_id += gridDim.x) {
    const int64_t m0 = (tile_id / tiles_k) * kTile, k0 = (tile_id % tiles_k) * kTile;

    // Row phase: one 16-element block of one row, straight from global memory.
    const int64_t m = m0 + r_local, k = k0 + cb * 16;
    const bool in_row = m < a.rows && k < a.cols;
    float v[16];
    if (in_row) {
      load16<kType>(a.x, m * a.cols + k, v);
    } else {
      zero16(v);  // the zero padding of M, and columns past K
    }
    if (in_row && a.rowwise) {
      uint32_t bits = block_abs_bits(v);
      if constexpr (kAmaxOnly) {
        row_acc = max_u32(row_acc, bits);
      } else {
        const int64_t first = m * a.cols + k;
        EncodedBlock e = quantize16(v, amax_from_abs_bits(bits), row_scales,
                                    a.row_rounding.stochastic, a.row_rounding.seed,
                                    a.row_rounding.offset + static_cast<uint64_t>(first / 4));
        store_codes(a.row.data, first / 2, e.codes);
        a.row.scale[first / 16] = static_cast<uint8_t>(e.scale);
      }
    }
    float4* dst = reinterpret_cast<float4*>(&tile[r_local][cb * 16]);
#pragma unroll
    for (int i = 0; i < 4; ++i) dst[i] = make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
    __syncthreads();

    // Column phase: 16 consecutive rows of one column (a warp reads 32 consecutive
    // columns of a shared row: no bank conflicts).
    const int64_t kc = k0 + c_local, mc = m0 + mb * 16;
    const bool in_col = kc < a.cols && mc < a.padded_rows;
    float w[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) w[j] = tile[mb * 16 + j][c_local];
    if (in_col && a.columnwise) {
      if (a.rht_mask >= 0) rht16_to_bf16(w, static_cast<uint32_t>(a.rht_mask));
      uint32_t bits = block_abs_bits(w);
      if constexpr (kAmaxOnly) {
        col_acc = max_u32(col_acc, bits);
      } else {
        const int64_t first = kc * a.padded_rows + mc;  // flat index in [K, M_pad]
        EncodedBlock e = quantize16(w, amax_from_abs_bits(bits), col_scales_t,
                                    a.col_rounding.stochastic, a.col_rounding.seed,
                                    a.col_rounding.offset + static_cast<uint64_t>(first / 4));
        col_codes[c_local][mb] = e.codes;
        col_scales[c_local][mb] = static_cast<uint8_t>(e.scale);
      }
    }
    __syncthreads();

    // Column stores: lane q of each group of 4 writes the q-th 8 bytes of a 32-byte run
    // of one output row, so a warp writes 8 full rows' worth of this tile.
    if constexpr (!kAmaxOnly) {
      const int k_local = t >> 2, q = t & 3;
      const int64_t kk = k0 + k_local, mm = m0 + q * 16;
      if (a.columnwise && kk < a.cols && mm < a.padded_rows) {
        const int64_t first = kk * a.padded_rows + mm;
        store_codes(a.col.data, first / 2, col_codes[k_local][q]);
        a.col.scale[first / 16] = col_scales[k_local][q];
      }
    }
    // The next tile first writes `tile` (last read before the barrier above) and then
    // `col_codes` only after its own first barrier, which every thread reaches after
    // finishing these stores.
  }
  if constexpr (kAmaxOnly) {
    block_max_to_global(row_acc, a.amax_bits);
    block_max_to_global(col_acc, a.amax_bits + 1);
  }
}

// Writes the amax of an empty tensor (no kernel above runs).
__global__ void write_amax_kernel(AmaxIn a, float* out) { *out = read_amax(a); }

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

template <InputType kType>
struct AmaxLauncher {
  static cudaError_t run(const RowsArgs& args, cudaStream_t stream) {
    int64_t units = args.rows * (args.cols / 16);
    return launch(rows_1x16_kernel<kType, true>, (units + kThreads - 1) / kThreads, args, stream);
  }
};

template <InputType kType>
struct QuantizeLauncher {
  static cudaError_t run(const RowsArgs& args, int block_rows, cudaStream_t stream) {
    if (block_rows == 16) {
      int64_t warp_units = (args.rows / 16) * ((args.cols / 16 + 3) / 4);
      return launch(rows_16x16_kernel<kType>, (warp_units + kWarps - 1) / kWarps, args, stream);
    }
    int64_t units = args.rows * (args.cols / 16);
    return launch(rows_1x16_kernel<kType, false>, (units + kThreads - 1) / kThreads, args, stream);
  }
};

int64_t row_col_tiles(int64_t rows, int64_t cols) {
  int64_t padded = (rows + 15) / 16 * 16;
  return ((cols + kTile - 1) / kTile) * ((padded + kTile - 1) / kTile);
}

template <InputType kType>
struct RowColAmaxLauncher {
  static cudaError_t run(const RowColArgs& args, cudaStream_t stream) {
    return launch(quantize_row_col_kernel<kType, true>, row_col_tiles(args.rows, args.cols), args, stream);
  }
};

template <InputType kType>
struct RowColQuantizeLauncher {
  static cudaError_t run(const RowColArgs& args, cudaStream_t stream) {
    return launch(quantize_row_col_kernel<kType, false>, row_col_tiles(args.rows, args.cols), args, stream);
  }
};

}  // namespace

cudaError_t launch_amax(const void* x, InputType type, int64_t rows, int64_t cols,
                        int32_t rht_mask, uint32_t* amax_bits, cudaStream_t stream) {
  const QuantOut none{nullptr, nullptr, nullptr};
  RowsArgs args{x, rows, cols, rht_mask, AmaxIn{nullptr, amax_bits}, Rounding{false, 0u, 0u},
                none, none, amax_bits};
  return dispatch<AmaxLauncher>(type, args, stream);
}

cudaError_t launch_quantize(const void* x, InputType type, int64_t rows, int64_t cols,
                            int block_rows, int32_t rht_mask, AmaxIn amax, Rounding rounding,
                            QuantOut out, QuantOut transposed, cudaStream_t stream) {
  if (rows * cols == 0) {
    cudaError_t err = write_amax(amax, out.amax, stream);
    if (err != cudaSuccess || transposed.data == nullptr) return err;
    return write_amax(amax, transposed.amax, stream);
  }
  RowsArgs args{x, rows, cols, rht_mask, amax, rounding, out, transposed, nullptr};
  return dispatch<QuantizeLauncher>(type, args, block_rows, stream);
}

cudaError_t launch_row_col_amax(const void* x, InputType type, int64_t rows, int64_t cols,
                               int32_t rht_mask, uint32_t* amax_bits, cudaStream_t stream) {
  const QuantOut none{nullptr, nullptr, nullptr};
  RowColArgs args{x, rows, cols, (rows + 15) / 16 * 16, rht_mask, true, true,
                  AmaxIn{nullptr, amax_bits}, AmaxIn{nullptr, amax_bits + 1},
                  Rounding{false, 0u, 0u}, Rounding{false, 0u, 0u}, none, none, amax_bits};
  return dispatch<RowColAmaxLauncher>(type, args, stream);
}

cudaError_t launch_quantize_row_col(const void* x, InputType type, int64_t rows, int64_t cols,
                                   int32_t rht_mask, bool rowwise, bool columnwise,
                                   AmaxIn row_amax, AmaxIn col_amax, Rounding row_rounding,
                                   Rounding col_rounding, QuantOut row, QuantOut col,
                                   cudaStream_t stream) {
  if (rows * cols == 0) {
    cudaError_t err = rowwise ? write_amax(row_amax, row.amax, stream) : cudaSuccess;
    if (err != cudaSuccess || !columnwise) return err;
    return write_amax(col_amax, col.amax, stream);
  }
  RowColArgs args{x, rows, cols, (rows + 15) / 16 * 16, rht_mask, rowwise, columnwise,
                  row_amax, col_amax, row_rounding, col_rounding, row, col, nullptr};
  return dispatch<RowColQuantizeLauncher>(type, args, stream);
}

}  // namespace lowprec::cuda
