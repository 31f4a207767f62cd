// SPDX-License-Identifier: MIT
// The low-latency exchange's kernels (epcomm_kernels/cuda_low_latency.hpp), built
// from the CUDA codecs' per-tile code (tile_formats.cuh) so rows are the bytes the
// CPU codecs write. NOT YET RUN ON A GPU: compiled only.
//
// Ordering: a send kernel's row stores reach peers before the publish kernel's
// words because the publish kernel runs after it on the stream and starts with
// __threadfence_system(); words are volatile 64-bit stores. A wait kernel spins
// with volatile loads; the kernels after it on the stream read the rows.
#include <climits>
#include <string>
#include <type_traits>

#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_low_latency.hpp"
#include "epcomm_kernels/low_latency_wire.hpp"
#include "format_dispatch.cuh"
#include "launch.hpp"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

namespace wire = epcomm::kernels::low_latency;
using G = LowLatencyGeometry;
using B = LowLatencyBuffers;

constexpr int kPlanThreads = 1024;
constexpr int kSmallThreads = 256;

__device__ inline int first_local_rank(const G& g) { return g.rank / g.ranks_per_node * g.ranks_per_node; }
__device__ inline bool on_my_node(const G& g, int r) { return r / g.ranks_per_node == g.rank / g.ranks_per_node; }
__device__ inline int remote_index(const G& g, int r) {
  return r < first_local_rank(g) ? r : r - g.ranks_per_node;
}
__device__ inline int64_t slot_index(const G& g, int j, int s, int i) {
  return (static_cast<int64_t>(j) * g.ranks + s) * g.max_tokens + i;
}
__device__ inline void store_word(uint64_t* p, uint64_t v) { *reinterpret_cast<volatile unsigned long long*>(p) = v; }
__device__ inline uint64_t load_word(const uint64_t* p) {
  return *reinterpret_cast<const volatile unsigned long long*>(p);
}

// Hands a command to the host proxy through the ring in pinned memory; false if
// the proxy did not make room within timeout_cycles.
__device__ bool push_command(const B& b, const wire::ProxyCommand& c, long long timeout_cycles) {
  auto* head = reinterpret_cast<volatile unsigned long long*>(b.ring + wire::kRingHeadOffset);
  auto* tail = reinterpret_cast<volatile unsigned long long*>(b.ring + wire::kRingTailOffset);
  const unsigned long long h = *head;
  const long long start = clock64();
  while (h - *tail >= b.ring_capacity) {
    if (clock64() - start > timeout_cycles) return false;
    __nanosleep(128);
  }
  reinterpret_cast<wire::ProxyCommand*>(b.ring + wire::kRingCommandsOffset)[h & (b.ring_capacity - 1)] = c;
  __threadfence_system();
  *head = h + 1;
  return true;
}

// Encoding to the plain format of the source's own type is a copy, as on the CPU
// (a BF16 round trip through FP32 would change NaN payloads).
template <class F, class Src>
struct IsCopy : std::false_type {};
template <>
struct IsCopy<Plain<DType::kBF16>, uint16_t> : std::true_type {};
template <>
struct IsCopy<Plain<DType::kF32>, float> : std::true_type {};

// The lane's part of a row: encoded, or copied element by element.
template <class F, class Src>
__device__ inline void put_lane(const Src* src, const Lane& l, const Layout& layout, uint8_t* row, int64_t pos,
                                int hidden, unsigned long long* bad) {
  if constexpr (IsCopy<F, Src>::value) {
    Src* dst = reinterpret_cast<Src*>(row) + l.col0;
    for (int i = 0; i < l.valid; ++i) dst[i] = src[l.col0 + i];
  } else {
    Elems v;
    load8(src + l.col0, l.valid, v);
    F::encode(v, l, layout, row, pos, hidden, bad);
  }
}

__device__ void diagnose(const B& b, LowLatencyDiagnosis d) {
  *b.diagnosis = d;
  __threadfence_system();
}

// One block: checks the input (the host's send_plan rules), gives each (token, k)
// its slot (the i-th token choosing e takes slot i), counts per (rank, expert),
// and each expert's first row in the message to its rank.
__global__ void __launch_bounds__(kPlanThreads)
    plan_kernel(G g, B b, const int32_t* idx, const float* w, int num_tokens) {
  __shared__ int bad_at;
  const int K = g.topk, J = g.local_experts, E = J * g.ranks, n = num_tokens * K;
  if (threadIdx.x == 0) bad_at = INT_MAX;
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int e = idx[i];
    if (e == -1) {
      b.slot[i] = -1;
      continue;
    }
    bool bad = e < 0 || e >= E || !elem::is_finite(w[i]);
    for (int i2 = i - i % K; i2 < i && !bad; ++i2) bad = idx[i2] == e;
    if (bad) atomicMin(&bad_at, i);
    if (e < 0 || e >= E) b.slot[i] = -1;
  }
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    int c = 0;
    for (int i = 0; i < n; ++i) {
      if (idx[i] == e) b.slot[i] = c++;
    }
    b.counts[e] = c;
  }
  __syncthreads();
  for (int r = threadIdx.x; r < g.ranks; r += blockDim.x) {
    int acc = 0;
    for (int j = 0; j < J; ++j) {
      b.first_row[r * J + j] = acc;
      acc += b.counts[r * J + j];
    }
    b.rows_to[r] = acc;
  }
  if (threadIdx.x == 0) {
    b.flags[0] = bad_at != INT_MAX;
    b.flags[1] = 0;
    if (bad_at != INT_MAX) {
      diagnose(b, {LowLatencyDiagnosis::kBadInput, g.rank, bad_at / K, bad_at % K, idx[bad_at], w[bad_at]});
    }
  }
}

// 16 lanes a tile of one (token, k) row: encode straight into the owner's slot
// (a node peer's memory) or into the staging message for another node.
template <class F, class Src>
__global__ void __launch_bounds__(kBlockThreads)
    dispatch_send_kernel(G g, B b, Layout layout, const Src* x, const int32_t* idx, int num_tokens, uint64_t round) {
  if (b.flags[0]) return;
  const int K = g.topk, J = g.local_experts;
  const Lane l = lane_of(static_cast<int64_t>(num_tokens) * K, g.hidden);
  if (!l.in_range) return;  // the tile's 16 lanes share their row
  const int64_t pair = l.row;
  const int e = idx[pair];
  if (e < 0) return;
  const int t = static_cast<int>(pair / K), k = static_cast<int>(pair % K), r = e / J, j = e % J, i = b.slot[pair];
  uint8_t* row;
  int32_t* meta;
  if (on_my_node(g, r)) {
    uint8_t* base = b.shared[r % g.ranks_per_node];
    const int64_t at = slot_index(g, j, g.rank, i);
    row = base + g.rows[round & 1] + at * layout.row_bytes;
    meta = reinterpret_cast<int32_t*>(base + g.meta[round & 1]) + 2 * at;
  } else {
    uint8_t* m = b.dispatch_staging + remote_index(g, r) * g.dispatch_message_bytes + wire::dispatch_meta_offset(J);
    const int64_t q = b.first_row[r * J + j] + i;
    meta = reinterpret_cast<int32_t*>(m) + 2 * q;
    row = m + static_cast<int64_t>(b.rows_to[r]) * 8 + q * layout.row_bytes;
  }
  put_lane<F>(x + static_cast<int64_t>(t) * g.hidden, l, layout, row, pair, g.hidden, nullptr);
  if (l.tile == 0 && l.sub == 0) {
    meta[0] = t;
    meta[1] = k;
  }
}

// One block: the words for node peers, the headers and commands for other nodes.
__global__ void __launch_bounds__(kSmallThreads)
    dispatch_publish_kernel(G g, B b, int64_t row_bytes, uint64_t round, long long timeout_cycles) {
  __threadfence_system();
  __syncthreads();
  const bool rejected = b.flags[0] != 0;
  const int J = g.local_experts, first = first_local_rank(g);
  for (int w = threadIdx.x; w < g.ranks_per_node * J; w += blockDim.x) {
    const int lr = w / J, j = w % J;
    const uint32_t c = rejected ? 0u : static_cast<uint32_t>(b.counts[(first + lr) * J + j]);
    store_word(reinterpret_cast<uint64_t*>(b.shared[lr] + g.counts[round & 1]) + static_cast<int64_t>(g.rank) * J + j,
               wire::pack_word(round, rejected, c));
  }
  for (int r = threadIdx.x; r < g.ranks; r += blockDim.x) {
    if (on_my_node(g, r)) continue;
    uint8_t* msg = b.dispatch_staging + remote_index(g, r) * g.dispatch_message_bytes;
    auto* h = reinterpret_cast<wire::MessageHeader*>(msg);
    h->seq = round;
    h->rejected = rejected ? 1u : 0u;
    h->rows = rejected ? 0u : static_cast<uint32_t>(b.rows_to[r]);
    h->reason[0] = '\0';  // the rejecting rank's host reports the diagnosis
    auto* counts = reinterpret_cast<int32_t*>(msg + sizeof(wire::MessageHeader));
    for (int j = 0; j < J; ++j) counts[j] = rejected ? 0 : b.counts[r * J + j];
  }
  __threadfence_system();
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int r = 0; r < g.ranks; ++r) {
    if (on_my_node(g, r)) continue;
    const uint64_t bytes = rejected ? sizeof(wire::MessageHeader)
                                    : wire::dispatch_meta_offset(J) +
                                          static_cast<uint64_t>(b.rows_to[r]) * (8 + static_cast<uint64_t>(row_bytes));
    if (!push_command(b, {wire::ProxyKind::kDispatch, r, round, bytes}, timeout_cycles)) {
      diagnose(b, {LowLatencyDiagnosis::kRingFull, r, 0, 0, 0, 0.0f});
      return;
    }
  }
}

// One block: spins until each of `n` words carries `round` (word w belongs to
// rank w / per_rank), or timeout_cycles pass; names the first silent or rejecting
// rank in the diagnosis and sets flags[1], so the kernels after it do nothing.
__global__ void __launch_bounds__(kSmallThreads)
    wait_kernel(B b, const uint64_t* words, int n, int per_rank, uint64_t round, long long timeout_cycles) {
  __shared__ int silent, rejecting;
  if (threadIdx.x == 0) silent = rejecting = INT_MAX;
  __syncthreads();
  const long long start = clock64();
  for (int w = threadIdx.x; w < n; w += blockDim.x) {
    uint64_t v = load_word(words + w);
    while (wire::word_round(v) != static_cast<uint32_t>(round)) {
      if (clock64() - start > timeout_cycles) {
        atomicMin(&silent, w / per_rank);
        break;
      }
      __nanosleep(64);
      v = load_word(words + w);
    }
    if (wire::word_round(v) == static_cast<uint32_t>(round) && wire::word_rejected(v)) atomicMin(&rejecting, w / per_rank);
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0 && (silent != INT_MAX || rejecting != INT_MAX)) {
    b.flags[1] = 1;
    if (silent != INT_MAX) {
      diagnose(b, {LowLatencyDiagnosis::kTimeout, silent, 0, 0, 0, 0.0f});
    } else {
      diagnose(b, {LowLatencyDiagnosis::kRejected, rejecting, 0, 0, 0, 0.0f});
    }
  }
}

// Block j: expert j's slot regions, source by source, into its output rows.
__global__ void __launch_bounds__(kSmallThreads) compact_kernel(G g, B b, int64_t row_bytes, uint64_t round) {
  extern __shared__ int first[];  // [ranks + 1]
  if (b.flags[1]) return;
  const int j = blockIdx.x, P = g.ranks, J = g.local_experts;
  const uint8_t* mine = b.shared[g.rank % g.ranks_per_node];
  const auto* words = reinterpret_cast<const uint64_t*>(mine + g.counts[round & 1]);
  if (threadIdx.x == 0) {
    int acc = 0;
    for (int s = 0; s < P; ++s) {
      first[s] = acc;
      acc += static_cast<int>(wire::word_count(load_word(words + static_cast<int64_t>(s) * J + j)));
    }
    first[P] = acc;
    b.out_counts[j] = acc;
  }
  __syncthreads();
  const int n = first[P], lane = threadIdx.x % 32;
  const int64_t per_expert = static_cast<int64_t>(P) * g.max_tokens;
  const bool wide = row_bytes % 16 == 0;  // slot regions and the output start 256-byte aligned
  for (int q = threadIdx.x / 32; q < n; q += blockDim.x / 32) {
    int s = 0;
    while (first[s + 1] <= q) ++s;
    const int64_t from = slot_index(g, j, s, q - first[s]), to = j * per_expert + q;
    const uint8_t* src = mine + g.rows[round & 1] + from * row_bytes;
    uint8_t* dst = b.out_rows + to * row_bytes;
    if (wide) {
      for (int64_t i = lane; i < row_bytes / 16; i += 32) {
        reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
      }
    } else {
      for (int64_t i = lane; i < row_bytes; i += 32) dst[i] = src[i];
    }
    if (lane == 0) {
      const int32_t* meta = reinterpret_cast<const int32_t*>(mine + g.meta[round & 1]) + 2 * from;
      b.out_src_rank[to] = s;
      b.out_src_token[to] = meta[0];
      b.out_k[to] = meta[1];
    }
  }
}

// One block: each output row's place in the combine message to its source.
__global__ void __launch_bounds__(kSmallThreads) combine_plan_kernel(G g, B b) {
  if (threadIdx.x == 0) *b.bad_output = ~0ull;
  const int64_t per_expert = static_cast<int64_t>(g.ranks) * g.max_tokens;
  for (int s = threadIdx.x; s < g.ranks; s += blockDim.x) {
    int pos = 0;
    for (int j = 0; j < g.local_experts; ++j) {
      for (int q = 0; q < b.out_counts[j]; ++q) {
        const int64_t row = j * per_expert + q;
        if (b.out_src_rank[row] == s) b.combine_pos[row] = pos++;
      }
    }
    b.rows_to[s] = pos;
  }
}

// 16 lanes a tile of one output row: encode it into its source's (token, k) slot
// or into the combine message for another node.
template <class F, class Src>
__global__ void __launch_bounds__(kBlockThreads) combine_send_kernel(G g, B b, Layout layout, const Src* y) {
  if (b.flags[1]) return;
  const int64_t per_expert = static_cast<int64_t>(g.ranks) * g.max_tokens;
  const Lane l = lane_of(g.local_experts * per_expert, g.hidden);
  if (!l.in_range) return;
  const int j = static_cast<int>(l.row / per_expert);
  if (l.row % per_expert >= b.out_counts[j]) return;
  const int s = b.out_src_rank[l.row], t = b.out_src_token[l.row], k = b.out_k[l.row];
  uint8_t* dst;
  if (on_my_node(g, s)) {
    dst = b.shared[s % g.ranks_per_node] + g.combine_rows + (static_cast<int64_t>(t) * g.topk + k) * layout.row_bytes;
  } else {
    uint8_t* msg = b.combine_staging + remote_index(g, s) * g.combine_message_bytes;
    const int64_t pos = b.combine_pos[l.row];
    dst = msg + wire::combine_rows_offset(g.max_rows_to_rank) + pos * layout.row_bytes;
    if (l.tile == 0 && l.sub == 0) {
      int32_t* meta = reinterpret_cast<int32_t*>(msg + sizeof(wire::MessageHeader)) + 2 * pos;
      meta[0] = t;
      meta[1] = k;
    }
  }
  put_lane<F>(y + l.row * g.hidden, l, layout, dst, l.row, g.hidden, b.bad_output);
}

// One block: the combine's words for node peers, headers and commands for others.
__global__ void __launch_bounds__(kSmallThreads)
    combine_publish_kernel(G g, B b, int64_t row_bytes, uint64_t round, long long timeout_cycles) {
  __threadfence_system();
  __syncthreads();
  const bool rejected = *b.bad_output != ~0ull;
  const int first = first_local_rank(g);
  for (int lr = threadIdx.x; lr < g.ranks_per_node; lr += blockDim.x) {
    const uint32_t c = rejected ? 0u : static_cast<uint32_t>(b.rows_to[first + lr]);
    store_word(reinterpret_cast<uint64_t*>(b.shared[lr] + g.combine_flags) + g.rank, wire::pack_word(round, rejected, c));
  }
  for (int s = threadIdx.x; s < g.ranks; s += blockDim.x) {
    if (on_my_node(g, s)) continue;
    auto* h = reinterpret_cast<wire::MessageHeader*>(b.combine_staging + remote_index(g, s) * g.combine_message_bytes);
    h->seq = round;
    h->rejected = rejected ? 1u : 0u;
    h->rows = rejected ? 0u : static_cast<uint32_t>(b.rows_to[s]);
    h->reason[0] = '\0';
  }
  __threadfence_system();
  __syncthreads();
  if (threadIdx.x != 0) return;
  if (rejected) {
    const unsigned long long at = *b.bad_output;
    diagnose(b, {LowLatencyDiagnosis::kBadOutput, g.rank, static_cast<int32_t>(at / g.hidden),
                 static_cast<int32_t>(at % g.hidden), 0, 0.0f});
  }
  for (int s = 0; s < g.ranks; ++s) {
    if (on_my_node(g, s)) continue;
    const uint64_t bytes = rejected ? sizeof(wire::MessageHeader)
                                    : wire::combine_rows_offset(g.max_rows_to_rank) +
                                          static_cast<uint64_t>(b.rows_to[s]) * static_cast<uint64_t>(row_bytes);
    if (!push_command(b, {wire::ProxyKind::kCombine, s, round, bytes}, timeout_cycles)) {
      diagnose(b, {LowLatencyDiagnosis::kRingFull, s, 0, 0, 0, 0.0f});
      return;
    }
  }
}

// 16 lanes a tile of one token: its rows in k order, the CPU codecs' arithmetic.
template <class F, class Dst>
__global__ void __launch_bounds__(kBlockThreads)
    combine_reduce_kernel(G g, B b, Layout layout, const float* w, int num_tokens, Dst* out) {
  if (b.flags[1]) return;
  const Lane l = lane_of(num_tokens, g.hidden);
  if (l.valid == 0) return;
  const uint8_t* rows = b.shared[g.rank % g.ranks_per_node] + g.combine_rows;
  Elems a;
#pragma unroll
  for (int i = 0; i < kElemsPerLane; ++i) a[i] = 0.0f;
  for (int k = 0; k < g.topk; ++k) {
    const int64_t at = l.row * g.topk + k;
    if (b.slot[at] < 0) continue;
    Elems v;
    F::decode(rows + at * layout.row_bytes, l, layout, v);
    const float wk = w[at];
#pragma unroll
    for (int i = 0; i < kElemsPerLane; ++i) a[i] = x86::add(a[i], x86::mul(wk, v[i]));
  }
  store8(out + l.row * g.hidden + l.col0, l.valid, a);
}

// Dispatch formats are the plain ones and FP8: only these are instantiated.
template <class Fn>
void visit_dispatch_format(Format format, Fn&& fn) {
  switch (format) {
    case Format::kF32: return fn(Plain<DType::kF32>{});
    case Format::kBF16: return fn(Plain<DType::kBF16>{});
    case Format::kFP8: return fn(Fp8<false>{});
    case Format::kFP8UE8M0: return fn(Fp8<true>{});
    default: break;
  }
  throw Error(ErrorCode::kInvalidArgument, std::string("epcomm: low-latency dispatch_format ") + to_string(format) +
                                               " is not bf16, f32, fp8 or fp8-ue8m0");
}

// fn(element type pointer) for the exchange's dtype.
template <class Fn>
void visit_dtype(DType t, Fn&& fn) {
  if (t == DType::kF32) {
    fn(static_cast<float*>(nullptr));
  } else {
    fn(static_cast<uint16_t*>(nullptr));
  }
}

unsigned blocks_for(const char* op, int64_t rows, int hidden) { return tile_blocks(op, rows, hidden, kTilesPerBlock); }

}  // namespace
}  // namespace detail

void low_latency_preload_kernels() {
  using namespace detail;
  preload(reinterpret_cast<const void*>(&plan_kernel));
  preload(reinterpret_cast<const void*>(&dispatch_publish_kernel));
  preload(reinterpret_cast<const void*>(&wait_kernel));
  preload(reinterpret_cast<const void*>(&compact_kernel));
  preload(reinterpret_cast<const void*>(&combine_plan_kernel));
  preload(reinterpret_cast<const void*>(&combine_publish_kernel));
  for (Format f : {Format::kF32, Format::kBF16, Format::kFP8, Format::kFP8UE8M0}) {
    visit_dispatch_format(f, [](auto fmt) {
      using F = decltype(fmt);
      preload(reinterpret_cast<const void*>(&dispatch_send_kernel<F, float>));
      preload(reinterpret_cast<const void*>(&dispatch_send_kernel<F, uint16_t>));
    });
  }
  for (Format f : {Format::kF32, Format::kBF16}) {
    visit_format(f, [](auto fmt) {
      using F = decltype(fmt);
      preload(reinterpret_cast<const void*>(&combine_send_kernel<F, float>));
      preload(reinterpret_cast<const void*>(&combine_send_kernel<F, uint16_t>));
      preload(reinterpret_cast<const void*>(&combine_reduce_kernel<F, float>));
      preload(reinterpret_cast<const void*>(&combine_reduce_kernel<F, uint16_t>));
    });
  }
  for (int bits = 3; bits <= 16; ++bits) {
    visit_format(logfmt_format(bits), [](auto fmt) {
      using F = decltype(fmt);
      preload(reinterpret_cast<const void*>(&combine_send_kernel<F, float>));
      preload(reinterpret_cast<const void*>(&combine_send_kernel<F, uint16_t>));
      preload(reinterpret_cast<const void*>(&combine_reduce_kernel<F, float>));
      preload(reinterpret_cast<const void*>(&combine_reduce_kernel<F, uint16_t>));
    });
  }
}

void low_latency_dispatch_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* x,
                               const int32_t* topk_idx, const float* topk_weights, int num_tokens, uint64_t round,
                               void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  plan_kernel<<<1, kPlanThreads, 0, s>>>(g, b, topk_idx, topk_weights, num_tokens);
  check(cudaGetLastError(), "low-latency plan kernel launch");
  const Layout layout = layout_of(g.dispatch_format, g.hidden);
  if (num_tokens > 0) {
    const unsigned blocks = blocks_for("low_latency_dispatch_send", int64_t{num_tokens} * g.topk, g.hidden);
    visit_dispatch_format(g.dispatch_format, [&](auto fmt) {
      using F = decltype(fmt);
      visit_dtype(g.dtype, [&](auto* type) {
        using Src = std::remove_pointer_t<decltype(type)>;
        dispatch_send_kernel<F, Src><<<blocks, kBlockThreads, 0, s>>>(g, b, layout, static_cast<const Src*>(x),
                                                                      topk_idx, num_tokens, round);
      });
    });
    check(cudaGetLastError(), "low-latency dispatch send kernel launch");
  }
  dispatch_publish_kernel<<<1, kSmallThreads, 0, s>>>(g, b, layout.row_bytes, round, LLONG_MAX);
  check(cudaGetLastError(), "low-latency dispatch publish kernel launch");
}

void low_latency_dispatch_recv(const LowLatencyGeometry& g, const LowLatencyBuffers& b, uint64_t round,
                               uint64_t timeout_cycles, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  const long long timeout = static_cast<long long>(timeout_cycles > LLONG_MAX ? LLONG_MAX : timeout_cycles);
  uint8_t* const mine = b.own_shared;
  wait_kernel<<<1, kSmallThreads, 0, s>>>(b, reinterpret_cast<const uint64_t*>(mine + g.counts[round & 1]),
                                           g.ranks * g.local_experts, g.local_experts, round, timeout);
  check(cudaGetLastError(), "low-latency dispatch wait kernel launch");
  const int64_t row_bytes = layout_of(g.dispatch_format, g.hidden).row_bytes;
  compact_kernel<<<g.local_experts, kSmallThreads, sizeof(int) * (g.ranks + 1), s>>>(g, b, row_bytes, round);
  check(cudaGetLastError(), "low-latency compact kernel launch");
}

void low_latency_combine_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* expert_out,
                              uint64_t round, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  combine_plan_kernel<<<1, kSmallThreads, 0, s>>>(g, b);
  check(cudaGetLastError(), "low-latency combine plan kernel launch");
  const Layout layout = layout_of(g.combine_format, g.hidden);
  const unsigned blocks = blocks_for("low_latency_combine_send",
                                     int64_t{g.local_experts} * g.ranks * g.max_tokens, g.hidden);
  visit_format(g.combine_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using Src = std::remove_pointer_t<decltype(type)>;
      combine_send_kernel<F, Src><<<blocks, kBlockThreads, 0, s>>>(g, b, layout, static_cast<const Src*>(expert_out));
    });
  });
  check(cudaGetLastError(), "low-latency combine send kernel launch");
  combine_publish_kernel<<<1, kSmallThreads, 0, s>>>(g, b, layout.row_bytes, round, LLONG_MAX);
  check(cudaGetLastError(), "low-latency combine publish kernel launch");
}

void low_latency_combine_recv(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const float* topk_weights,
                              int num_tokens, void* out, uint64_t round, uint64_t timeout_cycles, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  const long long timeout = static_cast<long long>(timeout_cycles > LLONG_MAX ? LLONG_MAX : timeout_cycles);
  uint8_t* const mine = b.own_shared;
  wait_kernel<<<1, kSmallThreads, 0, s>>>(b, reinterpret_cast<const uint64_t*>(mine + g.combine_flags), g.ranks, 1,
                                           round, timeout);
  check(cudaGetLastError(), "low-latency combine wait kernel launch");
  if (num_tokens == 0) return;
  const Layout layout = layout_of(g.combine_format, g.hidden);
  const unsigned blocks = blocks_for("low_latency_combine_recv", num_tokens, g.hidden);
  visit_format(g.combine_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using Dst = std::remove_pointer_t<decltype(type)>;
      combine_reduce_kernel<F, Dst><<<blocks, kBlockThreads, 0, s>>>(g, b, layout, topk_weights, num_tokens,
                                                                     static_cast<Dst*>(out));
    });
  });
  check(cudaGetLastError(), "low-latency combine reduce kernel launch");
}

}  // namespace epcomm::kernels::cuda
