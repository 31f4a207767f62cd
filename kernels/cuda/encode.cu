// SPDX-License-Identifier: MIT
// encode_rows, pack_rows and encode_token_rows: one kernel per (format, source
// dtype), 16 lanes a tile, blocks walking rows (lane_io.cuh); pack_rows reads its
// rows through an index list, and encode_token_rows writes them through the same
// list too. LogFMT groups encode their kAhead tiles together (encode_tiles).
#include "cuda_check.hpp"
#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/cuda_codec.hpp"
#include "bulk_copy.cuh"
#include "format_dispatch.cuh"
#include "epcomm_kernels/cuda_rows.hpp"
#include "launch.hpp"

#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

// LogFMT's grouped encoder of BF16 rows needs about 96 registers a thread; capped
// at 80 (3 blocks an SM instead of 2) it spills a few bytes and runs 10 % faster
// (measured on an H200: docs/results/codec_gpu.md); at 64 it spills much more and
// is slower. FP32 rows take about 128 and would spill some 600 bytes at 80 (not
// measured), so they, like the other formats, state no minimum (0), which leaves
// ptxas its own choice: an explicit 1 made it take 72 registers for FP8-UE8M0
// instead of 64, and a block an SM fewer cost 8 points of pack bandwidth.
template <class F, class Src>
inline constexpr int kEncodeMinBlocks = kEncodesTileGroups<F> && std::is_same_v<Src, uint16_t> ? 3 : 0;

// Row i of the output (at out, read from in) as this thread's group takes part in
// it; in points at global memory or at the row's copy in shared memory.
template <class F, class Src>
__device__ void encode_row(const Src* in, int64_t i, const GroupWalk& w, int tiles, int hidden, const Layout& layout,
                           uint8_t* out, unsigned long long* bad) {
  // Everything below is uniform over the 16 lanes of a tile, as F::encode's
  // shuffles need.
  for (int t0 = w.first_tile; t0 < tiles; t0 += kAhead * w.tile_stride) {
    Raw<Src> raw[kAhead];
    if constexpr (kEncodesTileGroups<F>) {
      // Tiles past the row's last have no valid elements: they load nothing.
      Lane l[kAhead];
#pragma unroll
      for (int u = 0; u < kAhead; ++u) {
        l[u] = lane_in(i, t0 + u * w.tile_stride, hidden);
        load_raw(in + l[u].col0, l[u].valid, raw[u]);
      }
      F::template encode_tiles<kAhead>(l, [&](int u, Elems& v) { widen(raw[u], v); }, layout, out, i, hidden, bad);
    } else {
#pragma unroll
      for (int u = 0; u < kAhead; ++u) {
        const int t = t0 + u * w.tile_stride;
        if (t >= tiles) break;
        const Lane l = lane_in(i, t, hidden);
        load_raw(in + l.col0, l.valid, raw[u]);
      }
#pragma unroll
      for (int u = 0; u < kAhead; ++u) {
        const int t = t0 + u * w.tile_stride;
        if (t >= tiles) break;
        Elems v;
        widen(raw[u], v);
        F::encode(v, lane_in(i, t, hidden), layout, out, i, hidden, bad);
      }
    }
  }
}

template <class F, class Src>
__global__ void __launch_bounds__(kBlockThreads, kEncodeMinBlocks<F, Src>)
    encode_kernel(const Src* src, const int32_t* src_rows, bool scatter, int64_t rows, int hidden, int rows_per_block,
                  Layout layout, uint8_t* dst, unsigned long long* bad) {
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const GroupWalk w = group_walk(tiles, rows_per_block);
  if (!w.active) return;
  for (int64_t i = w.first_row; i < rows; i += w.row_stride) {
    const int64_t s = src_rows != nullptr ? src_rows[i] : i;
    encode_row<F>(src + s * hidden, i, w, tiles, hidden, layout, dst + (scatter ? s : i) * layout.row_bytes, bad);
  }
}

// Row i from its copy in shared memory: as encode_row, but a lane reads its
// elements from there when it needs them instead of holding a group's tiles in
// registers.
// g is the thread's group's place in the row.
template <class F, class Src>
__device__ void encode_staged_row(const Src* in, int64_t i, int g, int tiles, int hidden, const Layout& layout,
                                  uint8_t* out, unsigned long long* bad) {
  const auto elems_of = [&](const Lane& l, Elems& v) {
    Raw<Src> r;
    load_raw(in + l.col0, l.valid, r);
    widen(r, v);
  };
  if constexpr (kEncodesTileGroups<F>) {
    for (int t0 = g; t0 < tiles; t0 += kAhead * kTilesPerBlock) {
      Lane l[kAhead];
#pragma unroll
      for (int u = 0; u < kAhead; ++u) l[u] = lane_in(i, t0 + u * kTilesPerBlock, hidden);
      F::template encode_tiles<kAhead>(l, [&](int u, Elems& v) { elems_of(l[u], v); }, layout, out, i, hidden, bad);
    }
  } else {
    for (int t = g; t < tiles; t += kTilesPerBlock) {
      const Lane l = lane_in(i, t, hidden);
      Elems v;
      elems_of(l, v);
      F::encode(v, l, layout, out, i, hidden, bad);
    }
  }
}

// Rows staged through shared memory (bulk_copy.cuh): a grid of resident blocks,
// each walking rows blockIdx.x, blockIdx.x + gridDim.x, ... with `stages` rows'
// copies in flight; one thread starts each copy, the moment the block has read
// the stage it reuses. For rows of at least kTilesPerBlock tiles (a block a row)
// whose bytes and addresses suit the copy engine (encode() checks).
inline constexpr int kMaxStages = 4;
// Shared memory a block may take without asking (cudaFuncSetAttribute), and the
// most the stages may take.
inline constexpr int kStagedBytesDefault = 48 * 1024;
inline constexpr std::size_t kStagedBytesMost = 64 * 1024;
template <class F, class Src, int kMinBlocks>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocks)
    encode_staged_kernel(const Src* src, const int32_t* src_rows, bool scatter, int64_t rows, int hidden, int stages,
                         uint32_t stage_bytes, bool balance, Layout layout, uint8_t* dst, unsigned long long* bad) {
  extern __shared__ __align__(128) uint8_t staged[];
  __shared__ uint64_t full[kMaxStages];
  __shared__ unsigned done[kMaxStages];  // warps done with a stage, over all its uses
  constexpr unsigned kWarps = kBlockThreads / 32;
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const auto row_in_bytes = static_cast<uint32_t>(hidden * sizeof(Src));
  const auto source_row = [&](int64_t i) { return src + (src_rows != nullptr ? src_rows[i] : i) * hidden; };
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      bulk_barrier_init(&full[s]);
      done[s] = 0;
    }
    bulk_barrier_init_fence();
    for (int s = 0; s < stages; ++s) {
      const int64_t i = blockIdx.x + static_cast<int64_t>(s) * gridDim.x;
      if (i < rows) bulk_load(staged + s * stage_bytes, source_row(i), row_in_bytes, &full[s]);
    }
  }
  __syncthreads();
  const int64_t ahead = static_cast<int64_t>(stages) * gridDim.x;
  const int group = static_cast<int>(threadIdx.x / kLanesPerTile);
  const bool lead = balance ? threadIdx.x % 32 == 0 : threadIdx.x == 0;
  int s = 0;
  uint32_t parity = 0;
  unsigned use = 0;  // of stage s
  for (int64_t i = blockIdx.x, k = 0; i < rows; i += gridDim.x, ++k) {
    // The row whose copy replaces this one's, its index read before the wait.
    const Src* next = lead && i + ahead < rows ? source_row(i + ahead) : nullptr;
    const int64_t out_row = scatter ? src_rows[i] : i;
    // Balanced: odd rows give their extra tiles (a row of 56 tiles has 8 more
    // than 3 for each of the 16 groups) to the other half of the groups.
    const int g = balance && (k & 1) != 0 ? (group + kTilesPerBlock / 2) % kTilesPerBlock : group;
    bulk_wait(&full[s], parity);
    encode_staged_row<F>(reinterpret_cast<const Src*>(staged + s * stage_bytes), i, g, tiles, hidden, layout,
                         dst + out_row * layout.row_bytes, bad);
    if (balance) {
      // No block barrier: the last warp done with the stage starts its next copy,
      // so the warps drift apart by up to the stages and even out.
      __syncwarp();
      if (lead) {
        __threadfence_block();
        const unsigned before = atomicAdd(&done[s], 1u);
        if (before == (use + 1) * kWarps - 1 && next != nullptr) {
          __threadfence_block();
          bulk_proxy_fence();
          bulk_load(staged + s * stage_bytes, next, row_in_bytes, &full[s]);
        }
      }
    } else {
      __syncthreads();
      if (next != nullptr) {
        bulk_proxy_fence();
        bulk_load(staged + s * stage_bytes, next, row_in_bytes, &full[s]);
      }
    }
    if (++s == stages) {
      s = 0;
      parity ^= 1u;
      ++use;
    }
  }
}

// EPCOMM_CODEC_VARIANT, temporary, for one A/B measurement: 0 the row walk, 1..3
// two to four stages, 4 three stages with LogFMT of BF16 rows at 4 blocks an SM,
// 5 three stages released warp by warp, with balanced rows.
inline int codec_variant() {
  const char* v = std::getenv("EPCOMM_CODEC_VARIANT");
  return v != nullptr ? std::atoi(v) : 2;
}
// How many rows encode() stages through shared memory at once: 0 for the row walk.
inline int staged_rows_wanted() {
  const int n = codec_variant();
  return n <= 0 ? 0 : n >= 4 ? 3 : n + 1;
}

template <class Src>
int staged_rows(const Src* src, int hidden) {
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const std::size_t row_in_bytes = static_cast<std::size_t>(hidden) * sizeof(Src);
  if (tiles < kTilesPerBlock || row_in_bytes % 16 != 0 || reinterpret_cast<uintptr_t>(src) % 16 != 0) return 0;
  const std::size_t stage_bytes = (row_in_bytes + 127) / 128 * 128;
  int n = staged_rows_wanted();
  while (n > 1 && n * stage_bytes > kStagedBytesMost) --n;
  return n > 1 ? n : 0;
}

// Blocks of `kernel` (with smem bytes of dynamic shared memory) that the current
// device holds at once, asked once per kernel, device and size: the host calls
// are slow next to a kernel of some microseconds.
template <class Kernel>
int64_t resident_blocks(Kernel kernel, int smem) {
  static std::mutex m;
  static std::map<std::tuple<const void*, int, int>, int64_t> known;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  const std::lock_guard<std::mutex> lock(m);
  const auto key = std::make_tuple(reinterpret_cast<const void*>(kernel), device, smem);
  const auto it = known.find(key);
  if (it != known.end()) return it->second;
  if (smem > kStagedBytesDefault) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "cudaFuncSetAttribute");
  }
  int sms = 0, per_sm = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kBlockThreads, smem),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  const int64_t blocks = static_cast<int64_t>(sms) * (per_sm > 0 ? per_sm : 1);
  known.emplace(key, blocks);
  return blocks;
}

template <class F, class Src>
void launch_encode(const Src* in, const int32_t* src_rows, bool scatter, int64_t rows, int hidden,
                   const Layout& layout, uint8_t* out, unsigned long long* bad, cudaStream_t stream) {
  if (const int stages = staged_rows(in, hidden); stages > 0) {
    const auto stage_bytes = static_cast<uint32_t>((hidden * sizeof(Src) + 127) / 128 * 128);
    const int smem = stages * static_cast<int>(stage_bytes);
    auto kernel = &encode_staged_kernel<F, Src, kEncodeMinBlocks<F, Src>>;
    if constexpr (kEncodeMinBlocks<F, Src> == 3) {
      if (codec_variant() == 4) kernel = &encode_staged_kernel<F, Src, 4>;
    }
    const int64_t resident = resident_blocks(kernel, smem);
    kernel<<<grid_blocks(rows < resident ? rows : resident, stream), kBlockThreads, smem, stream>>>(
        in, src_rows, scatter, rows, hidden, stages, stage_bytes, codec_variant() == 5, layout, out, bad);
    return;
  }
  const RowWalk walk = row_walk(rows, hidden);
  encode_kernel<F><<<grid_blocks(walk.blocks, stream), kBlockThreads, 0, stream>>>(
      in, src_rows, scatter, rows, hidden, walk.rows_per_block, layout, out, bad);
}

// scatter: dst row src_rows[i] (instead of i) receives source row src_rows[i].
void encode(const char* op, Format format, const void* src, DType src_type, const int32_t* src_rows, bool scatter,
            int64_t rows, int hidden, void* dst, int64_t* bad_index, cudaStream_t stream) {
  check_shape(op, format, rows, hidden);
  check_dtype(op, src_type);
  if (logfmt_bits(format) != 0 && bad_index == nullptr) {
    throw Error(ErrorCode::kInvalidArgument, std::string("epcomm: ") + op + ": " + to_string(format) +
                                                 " cannot encode NaN or infinity and needs a bad_index to report them");
  }
  // All ones is -1 as int64 and the largest value for the kernels' unsigned atomicMin.
  if (bad_index != nullptr) check(cudaMemsetAsync(bad_index, 0xff, sizeof *bad_index, stream), "cudaMemsetAsync");
  if (rows == 0) return;
  const Layout layout = layout_of(format, hidden);
  if (plain_format(src_type) == format) {
    copy_rows(src, src_rows, dst, scatter ? src_rows : nullptr, rows, layout.row_bytes, stream);
    return;
  }
  auto* bad = reinterpret_cast<unsigned long long*>(bad_index);
  auto* out = static_cast<uint8_t*>(dst);
  visit_format(format, [&](auto f) {
    if (src_type == DType::kF32) {
      launch_encode<decltype(f)>(static_cast<const float*>(src), src_rows, scatter, rows, hidden, layout, out, bad,
                                 stream);
    } else {
      launch_encode<decltype(f)>(static_cast<const uint16_t*>(src), src_rows, scatter, rows, hidden, layout, out, bad,
                                 stream);
    }
  });
  check(cudaGetLastError(), "encode kernel launch");
}

}  // namespace

void preload_encode_kernels() {
  visit_every_format([](auto f) {
    using F = decltype(f);
    preload(reinterpret_cast<const void*>(&encode_kernel<F, float>));
    preload(reinterpret_cast<const void*>(&encode_kernel<F, uint16_t>));
    preload(reinterpret_cast<const void*>(&encode_staged_kernel<F, float, kEncodeMinBlocks<F, float>>));
    preload(reinterpret_cast<const void*>(&encode_staged_kernel<F, uint16_t, kEncodeMinBlocks<F, uint16_t>>));
  });
}

}  // namespace detail

void encode_rows(Format format, const void* src, DType src_type, int64_t rows, int hidden, void* dst,
                 int64_t* bad_index, void* stream) {
  detail::encode("encode_rows", format, src, src_type, nullptr, false, rows, hidden, dst, bad_index,
                 static_cast<cudaStream_t>(stream));
}

void pack_rows(Format format, const void* src, DType src_type, int hidden, const int32_t* src_rows, int64_t count,
               void* dst, int64_t* bad_index, void* stream) {
  detail::encode("pack_rows", format, src, src_type, src_rows, false, count, hidden, dst, bad_index,
                 static_cast<cudaStream_t>(stream));
}

void encode_token_rows(Format format, const void* src, DType src_type, int hidden, const int32_t* tokens,
                       int64_t count, void* dst, int64_t* bad_index, void* stream) {
  detail::encode("encode_token_rows", format, src, src_type, tokens, true, count, hidden, dst, bad_index,
                 static_cast<cudaStream_t>(stream));
}

}  // namespace epcomm::kernels::cuda
