// SPDX-License-Identifier: MIT
// sum_owner_partials, sum_routed_partials and sum_routed_to_output: combine's
// pre-reductions inside a node (cuda_plan.hpp). An owner sums, per token a node
// peer forwards, its rows of the token from its own memory and encodes the sum
// once, in the combine format, straight into that forwarder's receive region
// (over CUDA IPC: one 16-byte store per BF16 lane, the partial crossing NVLink
// once, as the owner writes it); the forwarder sums, per token it forwarded, its
// own rows' subtotal and the partials the owners pushed, from its own memory.
// Like accumulate.cu, 16 lanes own one tile of a row and walk the sources in the
// host combine's order, multiply and add rounded separately (x86_nan.cuh), so the
// sums are bit-identical to the host exchange's passes over the same lists; the
// encoding is the codecs' own (tile_formats.cuh). Blocks walk rows as the encode
// kernels do (lane_io.cuh): one token a block for rows of 16 tiles or more, the
// 16-lane groups over its tiles. Where the tokens' only node is this one, the
// forwarder's sum is the output: sum_routed_to_output adds it to zero as the
// source's final sum does and stores it in the output dtype, one pass.
// With node peer checksums an owner's blocks sign the partials they just pushed
// (reading them back from the forwarder's memory) and the forwarder's blocks
// first check, a warp a row, the partials of their tokens, which the sums then
// find in L1.
#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_plan.hpp"
#include "format_dispatch.cuh"
#include "launch.hpp"
#include "token_index.cuh"
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

// Where the owner pushes the partial of token-list entry `entry` of source `s`:
// its forwarder's (the local rank s % R) region, at row push_base[s] + entry.
struct PushTarget {
  uint8_t* row;
  uint32_t* sum;  // its checksum's place there (with checksums)
};
__device__ inline PushTarget push_target(const SlotArrays* owners, int R, const int64_t* push_base, int32_t s,
                                         int32_t entry, int64_t row_bytes) {
  const SlotArrays& f = owners[s % R];
  const int64_t at = push_base[s] + entry;
  return {f.partials + at * row_bytes, f.partial_sum == nullptr ? nullptr : f.partial_sum + at};
}

// kSign / kCheck: checksums on (checksums.record set). Kernels of their own, so
// that the hash's registers (warp_crc32c.cuh) do not cut the occupancy of the sums.
template <class Out, class Part, bool kSign>
__global__ void owner_partials_kernel(const SlotArrays* owners, int R, SlotArrays mine, const uint8_t* expert_out, int L,
                          const int32_t* entries, const int32_t* sources, const int64_t* push_base, int64_t count,
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
      uint8_t* out = push_target(owners, R, push_base, sources[i], entry, part_layout.row_bytes).row;
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
    // Signed once the whole block wrote them, from the bytes as they landed in
    // the forwarder's memory, a warp a row.
    __syncthreads();
    for (int r = warp; r < rows_per_block && i0 + r < count; r += blockDim.x / 32) {
      const PushTarget to = push_target(owners, R, push_base, sources[i0 + r], entries[i0 + r], part_layout.row_bytes);
      const uint32_t crc = warp_crc32c(crc_tables, to.row, part_layout.row_bytes, lane);
      if (lane == 0) {
        *to.sum = crc;
        note_signed_row(checksums, to.row);
      }
    }
  }
}

// a = the node partial of handled token h (RoutedPartials), tile l: from zero,
// over the owners the token reached in route order, this rank's FP32 subtotal of
// its rows or the partial the owner pushed here, each added as a + 1 * part. A
// lane past the row's end gets zeros.
template <class Out, class Part>
__device__ inline void node_partial(const RoutedPartials& r, const uint8_t* expert_out, int64_t h, bool weighted,
                                    const Lane& l, const Layout& out_layout, const Layout& part_layout, Elems& a) {
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) a[k] = 0.0f;
  if (l.valid == 0) return;  // no shuffles here: a lane past the row's end has nothing to do
  const int R = r.ranks_per_node, me = r.local_rank, L = r.max_rows_per_token;
  const SlotArrays& mine = r.owners[me];
  const int routes = r.route_count[h];
  for (int c = 0; c < routes; ++c) {
    const int ld = r.route_local[h * R + c];
    const int64_t entry = r.route_entry[h * R + c];
    Elems v;
    if (ld == me) {
      // This rank's own rows: an FP32 subtotal, never encoded.
#pragma unroll
      for (int k = 0; k < kElemsPerLane; ++k) v[k] = 0.0f;
      add_rows<Out>(mine, expert_out, mine.token_rows + entry * L, L, weighted, l, out_layout, v);
    } else {
      Part::decode(mine.partials + (r.push_base[ld] + entry) * part_layout.row_bytes, l, part_layout, v);
    }
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) a[k] = x86::add(a[k], x86::mul(1.0f, v[k]));
  }
}

// With checksums: a warp per (row, route) of the block's rows_per_block rows from
// d0 (handled(d) gives a row's handled token, -1 for none), for routes to an
// owner other than this rank, checks the partial that owner pushed here against
// the checksum it pushed with it. Every branch is uniform over the warp, as
// warp_crc32c's shuffles need.
template <class Handled>
__device__ inline void check_pushed(const RoutedPartials& r, const Crc32cTables& crc_tables, int64_t d0, int64_t count,
                                    int rows_per_block, Handled&& handled, const Layout& part_layout,
                                    const ChecksumReport& checksums) {
  const int R = r.ranks_per_node, me = r.local_rank;
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  const SlotArrays& mine = r.owners[me];
  for (int item = warp; item < rows_per_block * R; item += blockDim.x / 32) {
    const int64_t dc = d0 + item / R;
    const int c = item % R;
    if (dc >= count) continue;
    const int64_t h = handled(dc);
    if (h < 0 || c >= r.route_count[h]) continue;
    const int ld = r.route_local[h * R + c];
    if (ld == me) continue;
    const int64_t entry = r.route_entry[h * R + c];
    const int64_t at = r.push_base[ld] + entry;
    const uint8_t* row = mine.partials + at * part_layout.row_bytes;
    const uint32_t crc = warp_crc32c(crc_tables, row, part_layout.row_bytes, lane);
    if (lane == 0 && crc != mine.partial_sum[at]) record_mismatch(checksums, ld, entry, crc, mine.partial_sum[at]);
  }
}

template <class Out, class Part, bool kCheck>
__global__ void node_partials_kernel(RoutedPartials r, const uint8_t* expert_out, int64_t first, int64_t count, bool weighted,
                         int hidden, int rows_per_block, Layout out_layout, Layout part_layout, float* acc,
                         ChecksumReport checksums) {
  __shared__ Crc32cTables crc_tables;
  constexpr bool check = kCheck;
  if constexpr (check) {
    load_crc32c_tables(crc_tables, part_layout.row_bytes);
    __syncthreads();
  }
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const GroupWalk w = group_walk(tiles, rows_per_block);
  // The block's rows_per_block rows at a time (the groups' walk, row by row of it).
  const int64_t in_block = w.first_row - static_cast<int64_t>(blockIdx.x) * rows_per_block;
  for (int64_t d0 = static_cast<int64_t>(blockIdx.x) * rows_per_block; d0 < count; d0 += w.row_stride) {
    if (check) {
      check_pushed(r, crc_tables, d0, count, rows_per_block, [&](int64_t d) { return first + d; }, part_layout,
                   checksums);
    }
    const int64_t d = d0 + in_block;
    if (!w.active || d >= count) continue;
    for (int t = w.first_tile; t < tiles; t += w.tile_stride) {
      const Lane l = lane_in(d, t, hidden);
      if (l.valid == 0) continue;
      Elems a;
      node_partial<Out, Part>(r, expert_out, first + d, weighted, l, out_layout, part_layout, a);
      store8(acc + d * hidden + l.col0, l.valid, a);
    }
  }
}

// Output row t of num_tokens: the node partial of the token's entry in this
// node's list (tokens, ascending; handled token first + its index) added to zero
// as the source's final sum adds it (sum_node_partials: 0 + x, which quietens a
// NaN and turns -0 into +0), or +0 for a token not on the list, in Out.
template <class Out, class Part>
__global__ void routed_output_kernel(RoutedPartials r, const uint8_t* expert_out, int64_t first,
                                     const int32_t* tokens, int32_t listed, int64_t num_tokens, bool weighted,
                                     int hidden, int rows_per_block, Layout out_layout, Layout part_layout,
                                     uint8_t* out, ChecksumReport checksums) {
  __shared__ Crc32cTables crc_tables;
  const bool check = checksums.record != nullptr;  // uniform over the block
  if (check) {
    load_crc32c_tables(crc_tables, part_layout.row_bytes);
    __syncthreads();
  }
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const GroupWalk w = group_walk(tiles, rows_per_block);
  const auto handled = [&](int64_t t) {
    const int64_t i = token_index(tokens, listed, num_tokens, t);
    return i < 0 ? int64_t{-1} : first + i;
  };
  const int64_t in_block = w.first_row - static_cast<int64_t>(blockIdx.x) * rows_per_block;
  for (int64_t t0 = static_cast<int64_t>(blockIdx.x) * rows_per_block; t0 < num_tokens; t0 += w.row_stride) {
    if (check) check_pushed(r, crc_tables, t0, num_tokens, rows_per_block, handled, part_layout, checksums);
    const int64_t t = t0 + in_block;
    // Uniform over the 16 lanes of a tile, as Out::encode needs.
    if (!w.active || t >= num_tokens) continue;
    const int64_t h = handled(t);
    uint8_t* out_row = out + t * out_layout.row_bytes;
    for (int tile = w.first_tile; tile < tiles; tile += w.tile_stride) {
      const Lane l = lane_in(t, tile, hidden);
      Elems a;
#pragma unroll
      for (int k = 0; k < kElemsPerLane; ++k) a[k] = 0.0f;
      if (h >= 0) {
        Elems v;
        node_partial<Out, Part>(r, expert_out, h, weighted, l, out_layout, part_layout, v);
#pragma unroll
        for (int k = 0; k < kElemsPerLane; ++k) a[k] = x86::add(a[k], v[k]);
      }
      Out::encode(a, l, out_layout, out_row, t, hidden, nullptr);
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
    preload(reinterpret_cast<const void*>(&routed_output_kernel<decltype(out), decltype(part)>));
  };
  for (Format out : {Format::kF32, Format::kBF16}) {
    for (Format part : {Format::kF32, Format::kBF16, Format::kFP8, Format::kFP8UE8M0}) visit_formats(out, part, load);
    for (int bits = 3; bits <= 16; ++bits) visit_formats(out, logfmt_format(bits), load);
  }
}

}  // namespace detail

void sum_owner_partials(Format out_format, Format partial_format, const SlotArrays* owners, int ranks_per_node,
                        const SlotArrays& mine, const uint8_t* expert_out, int max_rows_per_token,
                        const int32_t* entries, const int32_t* sources, const int64_t* push_base, int64_t count,
                        bool weighted, int hidden, int64_t* bad_index, ChecksumReport checksums, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  check_shape("sum_owner_partials", partial_format, count, hidden);
  if (count == 0) return;
  const Layout out_layout = layout_of(out_format, hidden), part_layout = layout_of(partial_format, hidden);
  auto* bad = reinterpret_cast<unsigned long long*>(bad_index);
  visit_formats(out_format, partial_format, [&](auto out, auto part) {
    const auto kernel = checksums.record != nullptr ? owner_partials_kernel<decltype(out), decltype(part), true>
                                                    : owner_partials_kernel<decltype(out), decltype(part), false>;
    const Launch launch = launch_on(s, kernel, kBlockThreads);
    const RowWalk walk = row_walk(count, hidden, launch.threads);
    kernel<<<launch.blocks(walk.blocks), launch.threads, 0, s>>>(
        owners, ranks_per_node, mine, expert_out, max_rows_per_token, entries, sources, push_base, count, weighted,
        hidden, walk.rows_per_block, out_layout, part_layout, bad, checksums);
  });
  check(cudaGetLastError(), "owner_partials kernel launch");
}

void sum_routed_partials(Format out_format, Format partial_format, const RoutedPartials& routed,
                         const uint8_t* expert_out, int64_t first, int64_t count, bool weighted, int hidden, float* acc,
                         ChecksumReport checksums, void* stream) {
  using namespace detail;
  check_shape("sum_routed_partials", partial_format, count, hidden);
  if (count == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  const Layout out_layout = layout_of(out_format, hidden), part_layout = layout_of(partial_format, hidden);
  visit_formats(out_format, partial_format, [&](auto out, auto part) {
    const auto kernel = checksums.record != nullptr ? node_partials_kernel<decltype(out), decltype(part), true>
                                                    : node_partials_kernel<decltype(out), decltype(part), false>;
    const Launch launch = launch_on(s, kernel, kBlockThreads);
    const RowWalk walk = row_walk(count, hidden, launch.threads);
    kernel<<<launch.blocks(walk.blocks), launch.threads, 0, s>>>(
        routed, expert_out, first, count, weighted, hidden, walk.rows_per_block, out_layout, part_layout, acc,
        checksums);
  });
  check(cudaGetLastError(), "node_partials kernel launch");
}

void sum_routed_to_output(Format out_format, Format partial_format, const RoutedPartials& routed,
                          const uint8_t* expert_out, int64_t first, const int32_t* tokens, int32_t listed,
                          int64_t num_tokens, bool weighted, int hidden, void* out, ChecksumReport checksums,
                          void* stream) {
  using namespace detail;
  check_shape("sum_routed_to_output", partial_format, num_tokens, hidden);
  if (num_tokens == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  const Layout out_layout = layout_of(out_format, hidden), part_layout = layout_of(partial_format, hidden);
  visit_formats(out_format, partial_format, [&](auto o, auto part) {
    const auto kernel = &routed_output_kernel<decltype(o), decltype(part)>;
    const Launch launch = launch_on(s, kernel, kBlockThreads);
    const RowWalk walk = row_walk(num_tokens, hidden, launch.threads);
    kernel<<<launch.blocks(walk.blocks), launch.threads, 0, s>>>(
        routed, expert_out, first, tokens, listed, num_tokens, weighted, hidden, walk.rows_per_block, out_layout,
        part_layout, static_cast<uint8_t*>(out), checksums);
  });
  check(cudaGetLastError(), "routed_output kernel launch");
}

}  // namespace epcomm::kernels::cuda
