// SPDX-License-Identifier: MIT
// sum_owner_partials and sum_routed_partials: combine's pre-reductions inside a node
// (cuda_plan.hpp). An owner sums, per token a node peer forwards, its rows of the
// token from its own memory and encodes the sum once, in the combine format, into
// its slot; the forwarder sums, per token it forwarded, its own rows' subtotal and
// the owners' partials, read over CUDA IPC. Like accumulate.cu, 16 lanes own one
// tile of a row and walk the sources in the host combine's order, multiply and add
// rounded separately (x86_nan.cuh), so the sums are bit-identical to the host
// exchange's passes over the same lists; the encoding is the codecs' own
// (tile_formats.cuh). Blocks walk rows as the encode kernels do (lane_io.cuh): one
// token a block for rows of 16 tiles or more, the 16-lane groups over its tiles.
// With node peer checksums an owner's blocks sign the partials they just wrote
// and the forwarder's blocks first check, a warp a row, the owners' partials of
// their tokens, which the sums then find in L1: a partial crosses NVLink once.
#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_plan.hpp"
#include "format_dispatch.cuh"
#include "launch.hpp"
#include "warp_crc32c.cuh"
#include "x86_nan.cuh"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

// acc += (weighted ? weight : 1) * decode(Out, row) over the token's rows of one
// owner (token_rows, -1 padded to L), in their order. A lane past the row's end
// keeps its zeros, as the encoders expect.
template <class Out>
__device__ inline void add_rows(const SlotArrays& owner, const uint8_t* expert_out, const int32_t* rows, int L,
                                bool weighted, const Lane& l, const Layout& out_layout, Elems& acc) {
  if (l.valid == 0) return;
  for (int x = 0; x < L; ++x) {
    const int32_t p = rows[x];
    if (p < 0) break;
    const float w = weighted ? owner.weight[p] : 1.0f;
    Elems v;
    Out::decode(expert_out + static_cast<int64_t>(p) * out_layout.row_bytes, l, out_layout, v);
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) acc[k] = x86::add(acc[k], x86::mul(w, v[k]));
  }
}

// kSign / kCheck: checksums on (checksums.record set). Kernels of their own, so
// that the hash's registers (warp_crc32c.cuh) do not cut the occupancy of the sums.
template <class Out, class Part, bool kSign>
__global__ void __launch_bounds__(kBlockThreads)
    owner_partials_kernel(SlotArrays mine, const uint8_t* expert_out, int L, const int32_t* entries, int64_t count,
                          bool weighted, int hidden, int rows_per_block, Layout out_layout, Layout part_layout,
                          unsigned long long* bad, ChecksumReport checksums) {
  __shared__ Crc32cTables crc_tables;
  constexpr bool sign = kSign;
  if constexpr (sign) load_crc32c_tables(crc_tables, part_layout.row_bytes);  // the barrier below orders it
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const GroupWalk w = group_walk(tiles, rows_per_block);
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  // The block's rows_per_block rows at a time (the groups' walk, row by row of it).
  const int64_t in_block = w.first_row - static_cast<int64_t>(blockIdx.x) * rows_per_block;
  for (int64_t i0 = static_cast<int64_t>(blockIdx.x) * rows_per_block; i0 < count; i0 += w.row_stride) {
    const int64_t i = i0 + in_block;
    // Uniform over the 16 lanes of a tile, as Part::encode's shuffles need.
    if (w.active && i < count) {
      const int32_t entry = entries[i];
      const int32_t* rows = mine.token_rows + static_cast<int64_t>(entry) * L;
      uint8_t* out = mine.partials + static_cast<int64_t>(entry) * part_layout.row_bytes;
      for (int t = w.first_tile; t < tiles; t += w.tile_stride) {
        const Lane l = lane_in(i, t, hidden);
        Elems a;
#pragma unroll
        for (int k = 0; k < kElemsPerLane; ++k) a[k] = 0.0f;
        add_rows<Out>(mine, expert_out, rows, L, weighted, l, out_layout, a);
        Part::encode(a, l, part_layout, out, i, hidden, bad);
      }
    }
    if constexpr (!sign) continue;
    // Signed once the whole block wrote them, from the bytes as written (in this
    // SM's reach still), a warp a row.
    __syncthreads();
    for (int r = warp; r < rows_per_block && i0 + r < count; r += kBlockThreads / 32) {
      const int32_t entry = entries[i0 + r];
      const uint8_t* row = mine.partials + static_cast<int64_t>(entry) * part_layout.row_bytes;
      const uint32_t crc = warp_crc32c(crc_tables, row, part_layout.row_bytes, lane);
      if (lane == 0) {
        mine.partial_sum[entry] = crc;
        note_signed_row(checksums, row);
      }
    }
  }
}

template <class Out, class Part, bool kCheck>
__global__ void __launch_bounds__(kBlockThreads)
    node_partials_kernel(const SlotArrays* owners, int R, int me, int L, const uint8_t* expert_out,
                         const int32_t* route_count, const int32_t* route_local, const int32_t* route_entry,
                         int64_t first, int64_t count, bool weighted, int hidden, int rows_per_block,
                         Layout out_layout, Layout part_layout, float* acc, ChecksumReport checksums) {
  __shared__ Crc32cTables crc_tables;
  constexpr bool check = kCheck;
  if constexpr (check) {
    load_crc32c_tables(crc_tables, part_layout.row_bytes);
    __syncthreads();
  }
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const GroupWalk w = group_walk(tiles, rows_per_block);
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  // The block's rows_per_block rows at a time (the groups' walk, row by row of it).
  const int64_t in_block = w.first_row - static_cast<int64_t>(blockIdx.x) * rows_per_block;
  for (int64_t d0 = static_cast<int64_t>(blockIdx.x) * rows_per_block; d0 < count; d0 += w.row_stride) {
    // A warp per (row, route) of an owner other than this rank; every branch is
    // uniform over the warp, as warp_crc32c's shuffles need.
    for (int item = warp; check && item < rows_per_block * R; item += kBlockThreads / 32) {
      const int64_t dc = d0 + item / R;
      const int c = item % R;
      if (dc >= count || c >= route_count[first + dc]) continue;
      const int ld = route_local[(first + dc) * R + c];
      if (ld == me) continue;
      const int64_t entry = route_entry[(first + dc) * R + c];
      const SlotArrays& o = owners[ld];
      const uint32_t crc = warp_crc32c(crc_tables, o.partials + entry * part_layout.row_bytes, part_layout.row_bytes,
                                       lane);
      if (lane == 0 && crc != o.partial_sum[entry]) record_mismatch(checksums, ld, entry, crc, o.partial_sum[entry]);
    }
    const int64_t d = d0 + in_block;
    if (!w.active || d >= count) continue;
    const int64_t h = first + d;
    const int routes = route_count[h];
    for (int t = w.first_tile; t < tiles; t += w.tile_stride) {
      const Lane l = lane_in(d, t, hidden);
      if (l.valid == 0) continue;  // no shuffles here: a lane past the row's end has nothing to do
      Elems a;
#pragma unroll
      for (int k = 0; k < kElemsPerLane; ++k) a[k] = 0.0f;
      for (int c = 0; c < routes; ++c) {
        const int ld = route_local[h * R + c];
        const int64_t entry = route_entry[h * R + c];
        Elems v;
        if (ld == me) {
          // This rank's own rows: an FP32 subtotal, never encoded.
#pragma unroll
          for (int k = 0; k < kElemsPerLane; ++k) v[k] = 0.0f;
          add_rows<Out>(owners[me], expert_out, owners[me].token_rows + entry * L, L, weighted, l, out_layout, v);
        } else {
          Part::decode(owners[ld].partials + entry * part_layout.row_bytes, l, part_layout, v);
        }
#pragma unroll
        for (int k = 0; k < kElemsPerLane; ++k) a[k] = x86::add(a[k], x86::mul(1.0f, v[k]));
      }
      store8(acc + d * hidden + l.col0, l.valid, a);
    }
  }
}

// fn(Out{}, Part{}) for the expert outputs' plain format (F32 or BF16, the
// exchange's dtype) and the partials' format.
template <class Fn>
void visit_formats(Format out_format, Format part_format, Fn&& fn) {
  visit_format(part_format, [&](auto part) {
    if (out_format == Format::kF32) {
      fn(Plain<DType::kF32>{}, part);
    } else {
      fn(Plain<DType::kBF16>{}, part);
    }
  });
}

}  // namespace

void preload_owner_partial_kernels() {
  const auto load = [](auto out, auto part) {
    preload(reinterpret_cast<const void*>(&owner_partials_kernel<decltype(out), decltype(part), false>));
    preload(reinterpret_cast<const void*>(&owner_partials_kernel<decltype(out), decltype(part), true>));
    preload(reinterpret_cast<const void*>(&node_partials_kernel<decltype(out), decltype(part), false>));
    preload(reinterpret_cast<const void*>(&node_partials_kernel<decltype(out), decltype(part), true>));
  };
  for (Format out : {Format::kF32, Format::kBF16}) {
    for (Format part : {Format::kF32, Format::kBF16, Format::kFP8, Format::kFP8UE8M0}) visit_formats(out, part, load);
    for (int bits = 3; bits <= 16; ++bits) visit_formats(out, logfmt_format(bits), load);
  }
}

}  // namespace detail

void sum_owner_partials(Format out_format, Format partial_format, const SlotArrays& mine, const uint8_t* expert_out,
                        int max_rows_per_token, const int32_t* entries, int64_t count, bool weighted, int hidden,
                        int64_t* bad_index, ChecksumReport checksums, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  check_shape("sum_owner_partials", partial_format, count, hidden);
  // All ones is -1 as int64 and the largest value for the kernels' unsigned atomicMin.
  check(cudaMemsetAsync(bad_index, 0xff, sizeof *bad_index, s), "cudaMemsetAsync");
  if (count == 0) return;
  const RowWalk walk = row_walk(count, hidden);
  const unsigned blocks = grid_blocks(walk.blocks, s);
  const Layout out_layout = layout_of(out_format, hidden), part_layout = layout_of(partial_format, hidden);
  auto* bad = reinterpret_cast<unsigned long long*>(bad_index);
  visit_formats(out_format, partial_format, [&](auto out, auto part) {
    const auto kernel = checksums.record != nullptr ? owner_partials_kernel<decltype(out), decltype(part), true>
                                                    : owner_partials_kernel<decltype(out), decltype(part), false>;
    kernel<<<blocks, kBlockThreads, 0, s>>>(
        mine, expert_out, max_rows_per_token, entries, count, weighted, hidden, walk.rows_per_block, out_layout,
        part_layout, bad, checksums);
  });
  check(cudaGetLastError(), "owner_partials kernel launch");
}

void sum_routed_partials(Format out_format, Format partial_format, const SlotArrays* owners, int ranks_per_node,
                       int local_rank, int max_rows_per_token, const uint8_t* expert_out, const int32_t* route_count,
                       const int32_t* route_local, const int32_t* route_entry, int64_t first, int64_t count,
                       bool weighted, int hidden, float* acc, ChecksumReport checksums, void* stream) {
  using namespace detail;
  check_shape("sum_routed_partials", partial_format, count, hidden);
  if (count == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  const RowWalk walk = row_walk(count, hidden);
  const unsigned blocks = grid_blocks(walk.blocks, s);
  const Layout out_layout = layout_of(out_format, hidden), part_layout = layout_of(partial_format, hidden);
  visit_formats(out_format, partial_format, [&](auto out, auto part) {
    const auto kernel = checksums.record != nullptr ? node_partials_kernel<decltype(out), decltype(part), true>
                                                    : node_partials_kernel<decltype(out), decltype(part), false>;
    kernel<<<blocks, kBlockThreads, 0, s>>>(
        owners, ranks_per_node, local_rank, max_rows_per_token, expert_out, route_count, route_local, route_entry,
        first, count, weighted, hidden, walk.rows_per_block, out_layout, part_layout, acc, checksums);
  });
  check(cudaGetLastError(), "node_partials kernel launch");
}

}  // namespace epcomm::kernels::cuda
