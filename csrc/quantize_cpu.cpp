// CPU implementation of the quantize ops: plain loops over nvfp4_math.h, parallel over
// rows. Besides being the fast CPU path, this file is how CI proves the element math of
// the CUDA kernels equal to the reference without a GPU: both compile the same header.
//
// Each op works in two steps, like the reference: first the values to quantize (the
// input as FP32, after the optional RHT, transposed and zero-padded for a columnwise
// copy), then the amax, the scales and the codes of each 16-element block. In values
// mode a copy is written as its bf16 values e2m1(q) * f32(s_b) instead of codes and
// scales, with the CUDA kernels' own function (nvfp4_math.h block_values16).
#include "nvfp4_math.h"
#include "ops.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/scalar_tensor.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Exception.h>

#include <string.h>

#include <algorithm>
#include <functional>
#include <utility>
#include <vector>

namespace lowprec::cpu {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "packed codes are copied out as little-endian 64-bit words");

constexpr int64_t kRowGrain = 16;

// The per-row encoder is built twice on x86-64 Linux, for AVX2 and for the baseline
// instruction set, and the loader picks one for the machine (GCC/Clang function
// multiversioning): wider vectors, the same operations, so the same bits.
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define LP_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LP_CPU_CLONES
#endif

// Values per FP32 working chunk (16 MiB): bounds the memory a quantization adds to its
// input and outputs.
constexpr int64_t kChunkElements = int64_t{1} << 22;

uint64_t as_u64(int64_t v) { return static_cast<uint64_t>(v); }

void check_float_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 ||
                       x.scalar_type() == at::kHalf,
                   op, " takes float32, bfloat16 or float16 input; got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() >= 1, op, " needs at least one dimension");
}

float read_f32(const float* p, int64_t i) { return p[i]; }
float read_f32(const c10::BFloat16* p, int64_t i) { return static_cast<float>(p[i]); }
float read_f32(const c10::Half* p, int64_t i) { return static_cast<float>(p[i]); }

// Calls f(typed pointer) for the three input dtypes.
template <typename F>
void with_input(const at::Tensor& x, F&& f) {
  switch (x.scalar_type()) {
    case at::kFloat: f(x.const_data_ptr<float>()); break;
    case at::kBFloat16: f(x.const_data_ptr<c10::BFloat16>()); break;
    case at::kHalf: f(x.const_data_ptr<c10::Half>()); break;
    default: TORCH_CHECK(false, "unsupported dtype ", x.scalar_type());
  }
}

// out[r, k] = x[r, k] as FP32, with the RHT along k when rht_mask >= 0. x: [rows, cols].
template <typename T>
void prepare_rows(const T* x, int64_t rows, int64_t cols, int64_t rht_mask, float* out) {
  at::parallel_for(0, rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < cols; c += 16) {
        float v[16];
        for (int j = 0; j < 16; ++j) v[j] = read_f32(x, r * cols + c + j);
        if (rht_mask >= 0) rht16_to_bf16(v, static_cast<uint32_t>(rht_mask));
        memcpy(out + r * cols + c, v, sizeof v);
      }
    }
  });
}

// out[k, m] = x[m, k] for m < rows, 0 for rows <= m < padded_rows, with the RHT along m.
// x: [rows, cols] with rows `row_stride` apart; out: [cols, padded_rows]. The zero
// padding of NUMERICS 10. Works in 16x16 tiles: each input row segment is read
// contiguously, the RHT runs down the tile's columns (vectorized across them), and the
// tile is transposed on the way out, instead of a strided gather per column.
template <typename T>
void prepare_columns(const T* x, int64_t rows, int64_t cols, int64_t row_stride,
                     int64_t padded_rows, int64_t rht_mask, float* out) {
  at::parallel_for(0, (cols + 15) / 16, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t k0 = t * 16, nk = std::min<int64_t>(16, cols - k0);
      for (int64_t m = 0; m < padded_rows; m += 16) {
        float tile[16][16] = {};  // tile[j][kk] = x[m + j, k0 + kk]; zero past the end
        for (int j = 0; j < 16 && m + j < rows; ++j) {
          const T* row = x + (m + j) * row_stride + k0;
          for (int64_t kk = 0; kk < nk; ++kk) tile[j][kk] = read_f32(row, kk);
        }
        if (rht_mask >= 0) rht16_to_bf16_columns(tile, static_cast<uint32_t>(rht_mask));
        for (int64_t kk = 0; kk < nk; ++kk) {
          float* dst = out + (k0 + kk) * padded_rows + m;
          for (int j = 0; j < 16; ++j) dst[j] = tile[j][kk];
        }
      }
    }
  });
}

// max |x| bits over n prepared values (see abs_bits: a NaN-propagating max).
uint32_t max_abs_bits(const float* x, int64_t n) {
  return at::parallel_reduce(
      0, n, 1 << 16, 0u,
      [&](int64_t i0, int64_t i1, uint32_t acc) {
        for (int64_t i = i0; i < i1; ++i) acc = max_u32(acc, abs_bits(x[i]));
        return acc;
      },
      [](uint32_t a, uint32_t b) { return max_u32(a, b); });
}

// The signed E2M1 values of both codes of a packed byte (low nibble first), so that
// dequantizing reads one table entry per byte instead of decoding each nibble.
struct CodePairTable {
  float values[256][2];
};

const CodePairTable& code_pair_table() {
  static const CodePairTable table = [] {
    CodePairTable t;
    for (uint32_t byte = 0; byte < 256; ++byte) {
      for (uint32_t half = 0; half < 2; ++half) {
        uint32_t code = (byte >> (4 * half)) & 0xFu;
        float value = e2m1_magnitude_value(code & 7u);
        t.values[byte][half] = (code & 8u) ? -value : value;
      }
    }
    return t;
  }();
  return table;
}

float given_amax(const at::Tensor& amax) {
  TORCH_CHECK_VALUE(amax.numel() == 1, "amax must hold one value; got shape ", amax.sizes());
  return canonical_amax(amax.to(at::kFloat).contiguous().const_data_ptr<float>()[0]);
}

at::Tensor scalar_f32(float v, const at::TensorOptions& like) {
  at::Tensor t = at::empty({}, like.dtype(at::kFloat));
  t.mutable_data_ptr<float>()[0] = v;
  return t;
}

// Philox words of the n consecutive counters counter0, counter0 + 1, ...: word q of
// counter i at out[4 * i + q]. The counters go through each round side by side (lane
// arrays in `lanes`, 4 * n words of scratch), a loop the compiler vectorizes.
void philox_words(uint64_t seed, uint64_t counter0, int64_t n, uint32_t* lanes, uint32_t* out) {
  uint32_t* __restrict c0 = lanes;
  uint32_t* __restrict c1 = lanes + n;
  uint32_t* __restrict c2 = lanes + 2 * n;
  uint32_t* __restrict c3 = lanes + 3 * n;
  for (int64_t i = 0; i < n; ++i) {
    uint64_t counter = counter0 + as_u64(i);
    c0[i] = static_cast<uint32_t>(counter);
    c1[i] = static_cast<uint32_t>(counter >> 32);
    c2[i] = c3[i] = 0u;
  }
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    for (int64_t i = 0; i < n; ++i) philox_round(c0[i], c1[i], c2[i], c3[i], k0, k1);
    philox_bump_key(k0, k1);
  }
  for (int64_t i = 0; i < n; ++i) {
    out[4 * i + 0] = c0[i];
    out[4 * i + 1] = c1[i];
    out[4 * i + 2] = c2[i];
    out[4 * i + 3] = c3[i];
  }
}

// Scratch of encode_row for a row of `cols` values.
struct RowScratch {
  explicit RowScratch(int64_t cols, bool stochastic)
      : words(stochastic ? static_cast<size_t>(2 * cols) : 0u),
        codes(static_cast<size_t>(cols)),
        enc(static_cast<size_t>(cols / 16)),
        scales(static_cast<size_t>(cols / 16)) {}
  std::vector<uint32_t> words;  // Philox words (SR only), then the lanes of philox_words
  std::vector<uint8_t> codes;   // one 4-bit code per value
  std::vector<float> enc;       // each block's encode scale
  std::vector<uint8_t> scales;  // values mode: each block's scale byte
};

// Where encode_row(s) write: codes and scale bytes, or (values non-null: values mode)
// bf16 values. Whole-tensor pointers.
struct RowsOut {
  uint8_t* data;
  uint8_t* scale;
  uint16_t* values;
};

// Encodes one row of prepared values xr (flat row index `row` of a [*, cols] tensor)
// into its packed codes and block scales, or with `values` (values mode) into its bf16
// values. tile_bits: the abs bits of each block's amax (16x16 tiles), or null to take
// each 1x16 block's own. The element math is quantize16's (nvfp4_math.h); the scales,
// the codes and the packing each run as a loop of their own over the row, so that the
// code and packing loops vectorize.
LP_CPU_CLONES void encode_row(const float* xr, int64_t row, int64_t cols, const uint32_t* tile_bits,
                TensorScales t, bool stochastic, uint64_t seed, uint64_t offset,
                RowScratch& scratch, uint8_t* data, uint8_t* scale, uint16_t* values) {
  const int64_t blocks = cols / 16;
  float* enc = scratch.enc.data();
  if (values != nullptr) scale = scratch.scales.data();
  for (int64_t b = 0; b < blocks; ++b) {
    float v[16];
    memcpy(v, xr + b * 16, sizeof v);
    uint32_t bits = tile_bits != nullptr ? tile_bits[b] : block_abs_bits(v);
    uint32_t scale_bits = block_scale_bits(amax_from_abs_bits(bits), t.s_enc);
    enc[b] = block_encode_scale(scale_bits, t.s_dec);
    scale[b] = static_cast<uint8_t>(scale_bits);
  }
  uint8_t* code = scratch.codes.data();
  if (stochastic) {
    // Element e of the row uses counter offset + (row * cols + e) / 4, word e % 4
    // (NUMERICS 4.1), so the row's words are those of cols / 4 consecutive counters.
    uint32_t* words = scratch.words.data();
    philox_words(seed, offset + as_u64(row * cols / 4), cols / 4, words + cols, words);
    for (int64_t b = 0; b < blocks; ++b) {
      for (int j = 0; j < 16; ++j) {
        int64_t e = b * 16 + j;
        code[e] = static_cast<uint8_t>(e2m1_code_sr(xr[e], enc[b], words[e]));
      }
    }
  } else {
    for (int64_t b = 0; b < blocks; ++b) {
      for (int j = 0; j < 16; ++j) {
        int64_t e = b * 16 + j;
        code[e] = static_cast<uint8_t>(e2m1_code_rne(xr[e], enc[b]));
      }
    }
  }
  if (values != nullptr) {
    // Values mode: each block's codes packed as the kernels hold them, then expanded by
    // their block_values16 (32 bytes in memory order).
    for (int64_t b = 0; b < blocks; ++b) {
      uint64_t packed = 0u;
      for (int j = 0; j < 16; ++j) packed |= static_cast<uint64_t>(code[b * 16 + j]) << (4 * j);
      uint32_t words[8];
      block_values16(packed, scale[b], words);
      memcpy(values + b * 16, words, sizeof words);
    }
    return;
  }
  // Even element in the low nibble (NUMERICS 1).
  for (int64_t i = 0; i < cols / 2; ++i) data[i] = static_cast<uint8_t>(code[2 * i] | (code[2 * i + 1] << 4));
}

// Quantizes the prepared FP32 values xf of rows [row0, row0 + n_rows) (xf points at
// row row0) in 1x16 or 16x16 blocks into data [rows, cols/2] and scale [rows, cols/16]
// (raw bytes), or into values [rows, cols] (bf16 bits). A 16x16 tile never straddles
// two calls: row0 and n_rows are multiples of 16 then.
void encode_rows(const float* xf, int64_t row0, int64_t n_rows, int64_t cols,
                 int64_t block_rows, TensorScales t, bool stochastic, uint64_t seed,
                 uint64_t offset, const RowsOut& out) {
  int64_t blocks = cols / 16;
  // One group: a row (1x16 blocks) or the 16 rows of a row of tiles (16x16).
  at::parallel_for(0, n_rows / block_rows, block_rows == 1 ? kRowGrain : 1, [&](int64_t g0, int64_t g1) {
    RowScratch scratch(cols, stochastic);
    std::vector<uint32_t> tile_bits(block_rows == 16 ? static_cast<size_t>(blocks) : 0u);
    for (int64_t g = g0; g < g1; ++g) {
      int64_t r_first = g * block_rows;
      if (block_rows == 16) {  // one amax over 16 rows, the tile scale repeated per row
        std::fill(tile_bits.begin(), tile_bits.end(), 0u);
        for (int64_t r = r_first; r < r_first + 16; ++r) {
          for (int64_t b = 0; b < blocks; ++b) {
            float v[16];
            memcpy(v, xf + r * cols + b * 16, sizeof v);
            tile_bits[b] = max_u32(tile_bits[b], block_abs_bits(v));
          }
        }
      }
      for (int64_t r = r_first; r < r_first + block_rows; ++r) {
        int64_t row = row0 + r;
        const bool values = out.values != nullptr;
        encode_row(xf + r * cols, row, cols, block_rows == 16 ? tile_bits.data() : nullptr, t,
                   stochastic, seed, offset, scratch,
                   values ? nullptr : out.data + row * (cols / 2),
                   values ? nullptr : out.scale + row * blocks,
                   values ? out.values + row * cols : nullptr);
      }
    }
  });
}

// Fills out with the prepared FP32 values (input as FP32, RHT, transpose, padding: the
// values the reference quantizes) of rows [r0, r1) of the tensor being quantized.
using Prepare = std::function<void(int64_t r0, int64_t r1, float* out)>;

// Quantizes a [rows, cols] tensor given by `prepare` in chunks of about kChunkElements
// values, so that peak memory is the input and the outputs plus one FP32 chunk (not a
// full FP32 copy). Without a given amax, a tensor of several chunks is prepared twice:
// once for its amax, once to encode. Returns the amax used.
float quantize_chunked(const Prepare& prepare, int64_t rows, int64_t cols, int64_t block_rows,
                       std::optional<float> amax_given, bool stochastic, uint64_t seed,
                       uint64_t offset, const RowsOut& out) {
  int64_t step = std::max<int64_t>(16, kChunkElements / std::max<int64_t>(cols, 1) / 16 * 16);
  step = std::min(step, rows);
  std::vector<float> chunk(static_cast<size_t>(step * cols));
  bool one_chunk = step == rows;
  float amax;
  if (amax_given.has_value()) {
    amax = *amax_given;
  } else {
    uint32_t bits = 0u;
    for (int64_t r0 = 0; r0 < rows; r0 += step) {
      int64_t r1 = std::min(rows, r0 + step);
      prepare(r0, r1, chunk.data());
      bits = max_u32(bits, max_abs_bits(chunk.data(), (r1 - r0) * cols));
    }
    amax = amax_from_abs_bits(bits);
  }
  TensorScales t = tensor_scales(amax);
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    int64_t r1 = std::min(rows, r0 + step);
    if (!one_chunk || amax_given.has_value()) prepare(r0, r1, chunk.data());
    encode_rows(chunk.data(), r0, r1 - r0, cols, block_rows, t, stochastic, seed, offset, out);
  }
  return amax;
}

// Placeholder outputs of a copy the caller did not ask for.
Triple absent_copy(const at::Tensor& x) {
  return {at::empty({0}, x.options().dtype(at::kByte)),
          at::empty({0}, x.options().dtype(at::kFloat8_e4m3fn)),
          at::empty({}, x.options().dtype(at::kFloat))};
}

// A copy's outputs (data, scale) of a [lead..., cols] quantization: codes uint8
// [lead..., cols/2] and scales [lead..., cols/16], or with `values` bf16 [lead..., cols]
// and a 0-element scale (lowprec/formats.py empty_values); `out` points into them.
std::pair<at::Tensor, at::Tensor> allocate(at::IntArrayRef lead_and_cols, int64_t cols,
                                           bool values, const at::TensorOptions& options,
                                           RowsOut& out) {
  if (values) {
    at::Tensor v = at::empty(with_last(lead_and_cols, cols), options.dtype(at::kBFloat16));
    out = RowsOut{nullptr, nullptr, static_cast<uint16_t*>(v.mutable_data_ptr())};
    return {v, at::empty({0}, options.dtype(at::kFloat8_e4m3fn))};
  }
  at::Tensor data = at::empty(with_last(lead_and_cols, cols / 2), options.dtype(at::kByte));
  at::Tensor scale =
      at::empty(with_last(lead_and_cols, cols / 16), options.dtype(at::kFloat8_e4m3fn));
  out = RowsOut{data.mutable_data_ptr<uint8_t>(), static_cast<uint8_t*>(scale.mutable_data_ptr()),
                nullptr};
  return {data, scale};
}

Triple quantize_rows(const at::Tensor& x, int64_t block_rows, int64_t rht_mask, bool stochastic,
                     int64_t seed, int64_t offset, const std::optional<at::Tensor>& amax,
                     bool values = false) {
  int64_t cols = x.size(-1);
  int64_t rows = leading_rows(x);
  RowsOut out{};
  auto [data, scale] = allocate(x.sizes(), cols, values, x.options(), out);
  std::optional<float> given;
  if (amax.has_value()) given = given_amax(*amax);
  float used;
  with_input(x, [&](auto* p) {
    Prepare prepare = [&](int64_t r0, int64_t r1, float* out) {
      prepare_rows(p + r0 * cols, r1 - r0, cols, rht_mask, out);
    };
    used = quantize_chunked(prepare, rows, cols, block_rows, given, stochastic, as_u64(seed),
                            as_u64(offset), out);
  });
  return {data, scale, scalar_f32(used, x.options())};
}

}  // namespace

Triple quantize_nvfp4(const at::Tensor& x_in, int64_t block_rows, int64_t rht_mask,
                      bool stochastic, int64_t seed, int64_t offset,
                      const std::optional<at::Tensor>& amax) {
  check_quantize_args(x_in, block_rows, rht_mask, "quantize_nvfp4");
  return quantize_rows(x_in.contiguous(), block_rows, rht_mask, stochastic, seed, offset, amax);
}

TwoTriples quantize_row_col(const at::Tensor& x_in, int64_t rht_mask, bool rowwise,
                                 bool columnwise, bool row_stochastic, bool col_stochastic,
                                 int64_t seed, int64_t row_offset, int64_t col_offset,
                                 const std::optional<at::Tensor>& row_amax,
                                 const std::optional<at::Tensor>& col_amax, bool row_values,
                                 bool col_values) {
  check_quantize_args(x_in, 1, rht_mask, "quantize_row_col");
  at::Tensor x = x_in.contiguous();
  Triple row = rowwise ? quantize_rows(x, 1, -1, row_stochastic, seed, row_offset, row_amax,
                                       row_values)
                       : absent_copy(x);
  if (!columnwise) return std::tuple_cat(row, absent_copy(x));

  // Columnwise copy: the zero-padded transpose [K, M_pad], RHT along M.
  int64_t cols = x.size(-1), rows = leading_rows(x);
  int64_t padded = (rows + 15) / 16 * 16;
  RowsOut out{};
  auto [col_data, col_scale] = allocate({cols, padded}, padded, col_values, x.options(), out);
  std::optional<float> given;
  if (col_amax.has_value()) given = given_amax(*col_amax);
  float col_used;
  with_input(x, [&](auto* p) {
    // Rows [k0, k1) of the [K, M_pad] transpose are input columns k0..k1-1.
    Prepare prepare = [&](int64_t k0, int64_t k1, float* out) {
      prepare_columns(p + k0, rows, k1 - k0, cols, padded, rht_mask, out);
    };
    col_used = quantize_chunked(prepare, cols, padded, 1, given, col_stochastic, as_u64(seed),
                                as_u64(col_offset), out);
  });
  return std::tuple_cat(row, Triple{col_data, col_scale, scalar_f32(col_used, x.options())});
}

TwoTriples quantize_weight_2d(const at::Tensor& w_in, bool columnwise, bool stochastic,
                             int64_t seed, int64_t offset, const std::optional<at::Tensor>& amax,
                             bool values) {
  check_quantize_args(w_in, 16, -1, "quantize_weight_2d");
  check_weight_values(columnwise, values);
  TORCH_CHECK_VALUE(w_in.dim() == 2, "quantize_weight_2d takes a 2-D weight [N, K]; got shape ",
                    w_in.sizes());
  at::Tensor w = w_in.contiguous();
  Triple row = quantize_rows(w, 16, -1, stochastic, seed, offset, amax, values);
  if (!columnwise) return std::tuple_cat(row, absent_copy(w));
  // The columnwise copy is the exact transpose of the rowwise codes and tile scales
  // (NUMERICS 5), also under SR: W^T is not quantized again.
  const int64_t n = w.size(0), k = w.size(1);
  at::Tensor col_data = at::empty({k, n / 2}, w.options().dtype(at::kByte));
  at::Tensor col_scale = at::empty({k, n / 16}, w.options().dtype(at::kFloat8_e4m3fn));
  const uint8_t* rd = std::get<0>(row).const_data_ptr<uint8_t>();
  const uint8_t* rs = static_cast<const uint8_t*>(std::get<1>(row).const_data_ptr());
  uint8_t* cd = col_data.mutable_data_ptr<uint8_t>();
  uint8_t* cs = static_cast<uint8_t*>(col_scale.mutable_data_ptr());
  at::parallel_for(0, k, kRowGrain, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t r = 0; r < n; r += 2) {
        uint32_t lo = (rd[r * (k / 2) + c / 2] >> (4 * (c & 1))) & 0xFu;
        uint32_t hi = (rd[(r + 1) * (k / 2) + c / 2] >> (4 * (c & 1))) & 0xFu;
        cd[c * (n / 2) + r / 2] = static_cast<uint8_t>(lo | (hi << 4));
      }
      for (int64_t g = 0; g < n / 16; ++g) cs[c * (n / 16) + g] = rs[g * 16 * (k / 16) + c / 16];
    }
  });
  at::Tensor col_amax = std::get<2>(row).clone();
  return std::tuple_cat(row, Triple{col_data, col_scale, col_amax});
}

at::Tensor block_dequantize_nvfp4(const at::Tensor& data_in, const at::Tensor& scale_in) {
  TORCH_CHECK_TYPE(data_in.scalar_type() == at::kByte, "data must be uint8; got ",
                   data_in.scalar_type());
  TORCH_CHECK_TYPE(scale_in.scalar_type() == at::kFloat8_e4m3fn,
                   "scale must be float8_e4m3fn; got ", scale_in.scalar_type());
  at::Tensor data = data_in.contiguous(), scale = scale_in.contiguous();
  int64_t half = data.size(-1);
  TORCH_CHECK_VALUE(scale.size(-1) * 8 == half && scale.numel() * 8 == data.numel(),
                    "scale shape ", scale.sizes(), " does not match data shape ", data.sizes());
  int64_t blocks = scale.numel();
  at::Tensor out = at::empty(with_last(data.sizes(), half * 2), data.options().dtype(at::kFloat));
  const uint8_t* d = data.const_data_ptr<uint8_t>();
  const uint8_t* s = static_cast<const uint8_t*>(scale.const_data_ptr());
  float* o = out.mutable_data_ptr<float>();
  const CodePairTable& pairs = code_pair_table();
  at::parallel_for(0, blocks, 1024, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float block_scale = e4m3_value(s[b]);
      float v[16];
      for (int i = 0; i < 8; ++i) memcpy(v + 2 * i, pairs.values[d[b * 8 + i]], 2 * sizeof(float));
      // exact: at most 6 significant bits; the operand order of the scalar code, so a NaN
      // scale gives the same NaN
      for (int j = 0; j < 16; ++j) o[b * 16 + j] = mul_rn(v[j], block_scale);
    }
  });
  return out;
}

namespace {

// alpha * a @ b^T (+ bias) of FP32 operands in FP32 (NUMERICS 8: alpha applied once to the
// FP32 product, then the bias, then one rounding to out_dtype).
at::Tensor scaled_product(const at::Tensor& a, const at::Tensor& a_amax, const at::Tensor& b,
                          const at::Tensor& b_amax, const std::optional<at::Tensor>& bias,
                          at::ScalarType out_dtype) {
  // Autocast must not reach the FP32 matmul below (it would run in bf16).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  float alpha = mul_rn(global_decode_scale(a_amax.item<float>()),
                       global_decode_scale(b_amax.item<float>()));
  at::Tensor out = at::matmul(a, b.transpose(-1, -2));
  out.mul_(at::scalar_tensor(alpha, out.options()));
  if (bias.has_value()) out.add_(bias->to(at::kFloat));
  return out.to(out_dtype);
}

}  // namespace

// The CPU backend's NVFP4 GEMM as one op (one call from Python instead of a dozen small
// tensor ops for the scale chain): the reference's arithmetic step for step, so its bits.
// Exact block dequantization, an FP32 matmul, alpha = S_dec(a) * S_dec(b) as one FP32
// product applied once, the bias added in FP32, one cast to out_dtype.
at::Tensor nvfp4_gemm(const at::Tensor& a_data, const at::Tensor& a_scale,
                      const at::Tensor& a_amax, const at::Tensor& b_data,
                      const at::Tensor& b_scale, const at::Tensor& b_amax,
                      const std::optional<at::Tensor>& bias, at::ScalarType out_dtype) {
  return scaled_product(block_dequantize_nvfp4(a_data, a_scale), a_amax,
                        block_dequantize_nvfp4(b_data, b_scale), b_amax, bias, out_dtype);
}

at::Tensor nvfp4_gemm_values(const at::Tensor& a, const at::Tensor& a_amax, const at::Tensor& b,
                             const at::Tensor& b_amax, at::ScalarType out_dtype) {
  check_gemm_values_args(a, a_amax, b, b_amax, out_dtype);
  // bf16 -> FP32 is exact; the products and sums run in FP32 as on the GPU.
  return scaled_product(a.to(at::kFloat), a_amax, b.to(at::kFloat), b_amax, std::nullopt,
                        out_dtype);
}

std::tuple<at::Tensor, at::Tensor> quantize_fp8_rowwise(const at::Tensor& x_in) {
  check_float_input(x_in, "quantize_fp8");
  at::Tensor x = x_in.contiguous();
  int64_t cols = x.size(-1);
  int64_t rows = leading_rows(x);
  at::Tensor data = at::empty(x.sizes(), x.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor scale = at::empty(with_last(x.sizes(), 1), x.options().dtype(at::kFloat));
  uint8_t* d = static_cast<uint8_t*>(data.mutable_data_ptr());
  float* s = scale.mutable_data_ptr<float>();
  if (cols == 0) {
    for (int64_t r = 0; r < scale.numel(); ++r) s[r] = 1.0f;
    return {data, scale};
  }
  with_input(x, [&](auto* p) {
    at::parallel_for(0, rows, kRowGrain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        // Row amax keeps NaN and Inf as they are (the reference's x.abs().amax(-1)).
        uint32_t bits = 0u;
        for (int64_t k = 0; k < cols; ++k) bits = max_u32(bits, abs_bits(read_f32(p, r * cols + k)));
        float row_scale = fp8_row_scale(float_of(bits));
        s[r] = row_scale;
        for (int64_t k = 0; k < cols; ++k) {
          d[r * cols + k] = static_cast<uint8_t>(fp8_quantize_bits(read_f32(p, r * cols + k), row_scale));
        }
      }
    });
  });
  return {data, scale};
}

at::Tensor philox(int64_t seed, const at::Tensor& counters_in) {
  TORCH_CHECK_TYPE(counters_in.scalar_type() == at::kLong, "counters must be int64");
  at::Tensor counters = counters_in.contiguous();
  at::Tensor out = at::empty({counters.numel(), 4}, counters.options());
  const int64_t* c = counters.const_data_ptr<int64_t>();
  int64_t* o = out.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < counters.numel(); ++i) {
    Words4 w = philox4x32_10(as_u64(seed), as_u64(c[i]));
    o[4 * i + 0] = w.w0;
    o[4 * i + 1] = w.w1;
    o[4 * i + 2] = w.w2;
    o[4 * i + 3] = w.w3;
  }
  return out;
}

at::Tensor e4m3_round(const at::Tensor& v_in) {
  TORCH_CHECK_TYPE(v_in.scalar_type() == at::kFloat, "e4m3_round takes float32");
  at::Tensor v = v_in.contiguous();
  at::Tensor out = at::empty(v.sizes(), v.options().dtype(at::kFloat8_e4m3fn));
  const float* p = v.const_data_ptr<float>();
  uint8_t* o = static_cast<uint8_t*>(out.mutable_data_ptr());
  at::parallel_for(0, v.numel(), 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) o[i] = static_cast<uint8_t>(e4m3_saturate_bits(p[i]));
  });
  return out;
}

at::Tensor e2m1_round(const at::Tensor& v_in, const std::optional<at::Tensor>& words_in) {
  TORCH_CHECK_TYPE(v_in.scalar_type() == at::kFloat, "e2m1_round takes float32");
  at::Tensor v = v_in.contiguous();
  at::Tensor words;
  if (words_in.has_value()) {
    words = words_in->contiguous();
    TORCH_CHECK_VALUE(words.scalar_type() == at::kLong && words.numel() == v.numel(),
                      "words must be int64 with one word per value");
  }
  at::Tensor out = at::empty(v.sizes(), v.options().dtype(at::kByte));
  const float* p = v.const_data_ptr<float>();
  uint8_t* o = out.mutable_data_ptr<uint8_t>();
  for (int64_t i = 0; i < v.numel(); ++i) {
    uint32_t mag = words.defined()
                       ? e2m1_sr_magnitude(abs_of(p[i]), static_cast<uint32_t>(words.const_data_ptr<int64_t>()[i]))
                       : e2m1_rne_magnitude(abs_of(p[i]));
    o[i] = static_cast<uint8_t>(mag | (sign_bit(p[i]) << 3));
  }
  return out;
}

at::Tensor rht(const at::Tensor& x_in, int64_t rht_mask) {
  check_float_input(x_in, "rht");
  at::Tensor x = x_in.contiguous();
  int64_t cols = x.size(-1);
  TORCH_CHECK_VALUE(cols % 16 == 0, "rht needs the last dim to be a multiple of 16");
  int64_t rows = leading_rows(x);
  at::Tensor xf = at::empty({rows, cols}, x.options().dtype(at::kFloat));
  with_input(x, [&](auto* p) { prepare_rows(p, rows, cols, rht_mask, xf.mutable_data_ptr<float>()); });
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kBFloat16));
  const float* f = xf.const_data_ptr<float>();
  uint16_t* o = static_cast<uint16_t*>(out.mutable_data_ptr());
  for (int64_t i = 0; i < xf.numel(); ++i) o[i] = static_cast<uint16_t>(bits_of(f[i]) >> 16);
  return out;
}

}  // namespace lowprec::cpu

namespace lowprec {

void check_quantize_args(const at::Tensor& x, int64_t block_rows, int64_t rht_mask,
                         const char* op) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 ||
                       x.scalar_type() == at::kHalf,
                   op, " takes float32, bfloat16 or float16 input; got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() >= 1, op, " needs at least one dimension; got a 0-d tensor");
  TORCH_CHECK_VALUE(x.size(-1) % 16 == 0, op, " needs the last dim K % 16 == 0; got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(block_rows == 1 || block_rows == 16, op,
                    ": block_rows must be 1 or 16; got ", block_rows);
  TORCH_CHECK_VALUE(block_rows == 1 || (x.dim() >= 2 && x.size(-2) % 16 == 0), op,
                    ": 16x16 blocks need the row dim (second-to-last) to be a multiple of 16; "
                    "got shape ", x.sizes());
  TORCH_CHECK_VALUE(rht_mask >= -1 && rht_mask <= 0xFFFF, op,
                    ": rht_mask must be -1 (no RHT) or a 16-bit sign mask; got ", rht_mask);
}

void check_gemm_values_args(const at::Tensor& a, const at::Tensor& a_amax, const at::Tensor& b,
                            const at::Tensor& b_amax, at::ScalarType out_dtype) {
  const char* op = "nvfp4_gemm_values";
  TORCH_CHECK_TYPE(a.scalar_type() == at::kBFloat16 && b.scalar_type() == at::kBFloat16, op,
                   " multiplies bf16 values; got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK_VALUE(a.dim() == 2 && b.dim() == 2, op, " takes a [M, K] and b [N, K]; got shapes ",
                    a.sizes(), " and ", b.sizes());
  TORCH_CHECK_VALUE(a.size(1) == b.size(1) && a.size(1) > 0, op,
                    " needs the same K > 0 in a [M, K] and b [N, K]; got shapes ", a.sizes(),
                    " and ", b.sizes());
  TORCH_CHECK_VALUE(a_amax.numel() == 1 && b_amax.numel() == 1, op,
                    ": each amax must hold one value; got shapes ", a_amax.sizes(), " and ",
                    b_amax.sizes());
  // bf16 inputs give bf16 or FP32 outputs in cuBLASLt (not fp16: the CUDA op's types).
  TORCH_CHECK_TYPE(out_dtype == at::kBFloat16 || out_dtype == at::kFloat, op,
                   " writes bfloat16 or float32; got ", out_dtype);
}

}  // namespace lowprec
