// SPDX-License-Identifier: MIT
// The low-latency exchange's kernels (epcomm_kernels/cuda_low_latency.hpp), built
// from the CUDA codecs' per-tile code (tile_formats.cuh) so rows are the bytes the
// CPU codecs write.
//
// Ordering: every thread of a send kernel ends with __threadfence_system(), then
// its block counts itself done with an atomic; the last block sees every count,
// fences again and stores the arrival words with st.release.sys. A wait reads the
// words with ld.acquire.sys, so the rows it then reads are the ones stored before
// the words (the fence-fence pattern of CUDA's threadFenceReduction sample).
// A kernel's round is LowLatencyControl::round, which the dispatch kernel's last
// block advances: nothing passed by value changes from round to round.
#include <climits>
#include <string>
#include <type_traits>

#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_low_latency.hpp"
#include "epcomm_kernels/low_latency_wire.hpp"
#include "format_dispatch.cuh"
#include "launch.hpp"

namespace epcomm::kernels::cuda {

LowLatencyControl low_latency_initial_control() {
  LowLatencyControl c{};
  c.round = 0;
  c.bad_output = ~0ull;
  c.bad_input = INT_MAX;
  return c;
}

namespace detail {
namespace {

namespace wire = epcomm::kernels::low_latency;
using G = LowLatencyGeometry;
using B = LowLatencyBuffers;
using D = LowLatencyDiagnosis;

__device__ inline void store_release(uint64_t* p, uint64_t v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ inline uint64_t load_acquire(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ inline uint64_t now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
template <class T>
__device__ inline T load_volatile(const T* p) {
  return *reinterpret_cast<const volatile T*>(p);
}

__device__ inline int64_t slot_index(const G& g, int j, int s, int i) {
  return (static_cast<int64_t>(j) * g.ranks + s) * g.max_tokens + i;
}

// The first diagnosis wins and fails the exchange on this rank: kernels after it
// return at once, and the host reports it at its next call.
__device__ void report(const B& b, D d) {
  if (atomicCAS(&b.control->failed, 0, 1) != 0) return;
  volatile D* out = b.diagnosis;
  out->rank = d.rank;
  out->token = d.token;
  out->k = d.k;
  out->expert = d.expert;
  out->weight = d.weight;
  out->round = d.round;
  out->op = d.op;
  __threadfence_system();
  out->code = d.code;
  __threadfence_system();
}

// Lane of tile chunk * kTilesPerBlock + threadIdx.x / 16 of one row.
__device__ inline Lane row_lane(int64_t row, int chunk, int hidden) {
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  Lane l;
  l.row = row;
  l.tile = chunk * kTilesPerBlock + static_cast<int>(threadIdx.x) / kLanesPerTile;
  l.sub = static_cast<int>(threadIdx.x % kLanesPerTile);
  l.col0 = l.tile * kTileElems + l.sub * kElemsPerLane;
  l.in_range = l.tile < tiles;
  const int left = hidden - l.col0;
  l.valid = !l.in_range || left <= 0 ? 0 : (left < kElemsPerLane ? left : kElemsPerLane);
  l.mask = 0xffffu << (threadIdx.x & 16u);
  return l;
}
// Chunks of kTilesPerBlock tiles in a row (a block's 16-lane groups take a chunk's tiles).
__host__ __device__ inline int row_chunks(int hidden) {
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  return (tiles + kTilesPerBlock - 1) / kTilesPerBlock;
}

// Encoding to the plain format of the source's own type is a copy, as on the CPU
// (a BF16 round trip through FP32 would change NaN payloads).
template <class F, class Src>
struct IsCopy : std::false_type {};
template <>
struct IsCopy<Plain<DType::kBF16>, uint16_t> : std::true_type {};
template <>
struct IsCopy<Plain<DType::kF32>, float> : std::true_type {};

// A lane's loaded elements stored back unchanged (bits, not values).
__device__ inline void store_raw(uint16_t* p, int valid, const Raw<uint16_t>& r) {
  if (valid == kElemsPerLane && aligned<16>(p)) {
    *reinterpret_cast<uint4*>(p) = r.w;
    return;
  }
  const uint32_t w[4] = {r.w.x, r.w.y, r.w.z, r.w.w};
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) {
    if (k < valid) p[k] = static_cast<uint16_t>(w[k / 2] >> (16 * (k % 2)));
  }
}
__device__ inline void store_raw(float* p, int valid, const Raw<float>& r) {
  if (valid == kElemsPerLane && aligned<16>(p)) {
    reinterpret_cast<float4*>(p)[0] = r.a;
    reinterpret_cast<float4*>(p)[1] = r.b;
    return;
  }
  const float v[kElemsPerLane] = {r.a.x, r.a.y, r.a.z, r.a.w, r.b.x, r.b.y, r.b.z, r.b.w};
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) {
    if (k < valid) p[k] = v[k];
  }
}

// The block writes row `pos` of src (hidden elements) to dst in format F (dst
// is often a peer GPU's slot). Each thread loads its lanes of kAhead tile chunks
// before it stores any, so a thread keeps kAhead loads in flight instead of
// waiting for each before its store.
template <class F, class Src>
__device__ inline void put_row(const Src* src, int64_t pos, const Layout& layout, uint8_t* dst, int hidden,
                               unsigned long long* bad) {
  const int chunks = row_chunks(hidden);
  for (int c0 = 0; c0 < chunks; c0 += kAhead) {
    Lane l[kAhead];
    Raw<Src> r[kAhead];
#pragma unroll
    for (int i = 0; i < kAhead; ++i) {
      l[i] = row_lane(pos, c0 + i, hidden);  // chunks past the row: not in range
      if (l[i].in_range) load_raw(src + l[i].col0, l[i].valid, r[i]);
    }
#pragma unroll
    for (int i = 0; i < kAhead; ++i) {
      if (!l[i].in_range) continue;  // the tile's 16 lanes alike
      if constexpr (IsCopy<F, Src>::value) {
        store_raw(reinterpret_cast<Src*>(dst) + l[i].col0, l[i].valid, r[i]);
      } else {
        Elems v;
        widen(r[i], v);
        F::encode(v, l[i], layout, dst, pos, hidden, bad);
      }
    }
  }
}

// Counts this block done; true in the last block of the grid to finish, which
// then sees every other block's stores (they fenced before counting).
__device__ inline bool last_block(unsigned int* done) {
  __shared__ bool last;
  __threadfence_system();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(done, 1u) == gridDim.x * gridDim.y - 1;
  __syncthreads();
  if (last) __threadfence_system();
  return last;
}

// How many blocks a send kernel that loops over (token, k) pairs or received rows
// launches at most: more than a large GPU holds at once, so every SM is busy.
constexpr int64_t kMaxSendBlocks = 1 << 12;
// How many blocks a receive kernel aims for, split over experts or tokens.
constexpr int kRecvBlocks = 1024;

// Block i: (token, k) pairs i, i + gridDim.x, ... A pair's slot is the number of
// earlier tokens that chose its expert (the block counts matches among the
// earlier tokens' entries), and the block encodes the token's row straight into
// that slot of the owner: the K copies of a token are K blocks writing in
// parallel, not one block writing them in turn. Each block encodes the row
// itself (the encode is cheap next to the stores; a row encoded once would need
// a second pass or one block writing all K copies).
template <class F, class Src>
__global__ void __launch_bounds__(kBlockThreads)
    dispatch_send_kernel(G g, B b, Layout layout, const Src* x, const int32_t* idx, const float* w, int num_tokens,
                         bool reject) {
  LowLatencyControl* const c = b.control;
  if (load_volatile(&c->failed)) return;  // the same in every block: set by an earlier kernel only
  const uint64_t round = c->round + 1;    // the last block stores it, after every block read it
  const int K = g.topk, J = g.local_experts, E = J * g.ranks;
  const int64_t pairs = reject ? 0 : static_cast<int64_t>(num_tokens) * K;
  __shared__ int matches;
  for (int64_t pair = blockIdx.x; pair < pairs; pair += gridDim.x) {
    const int t = static_cast<int>(pair / K), k = static_cast<int>(pair % K);
    const int e = idx[pair];
    const float wk = w[pair];
    // The host's send_plan rules for this entry; every value here is the same in
    // all threads, so the block's barriers below are uniform.
    bool bad = e < -1 || e >= E || (e != -1 && !elem::is_finite(wk));
    const int32_t* my_idx = idx + static_cast<int64_t>(t) * K;
    for (int k0 = 0; k0 < k && e != -1; k0 += blockDim.x) {
      const int k2 = k0 + static_cast<int>(threadIdx.x);
      bad = __syncthreads_or(bad || (k2 < k && my_idx[k2] == e)) != 0;
    }
    // The slot: matches among the earlier tokens' entries, each thread's loads
    // independent of one another, summed per warp, then per block.
    int earlier = 0;
    if (!bad && e >= 0) {
      if (threadIdx.x == 0) matches = 0;
      int mine = 0;
      const int64_t before = static_cast<int64_t>(t) * K;
      for (int64_t i = threadIdx.x; i < before; i += blockDim.x) mine += idx[i] == e ? 1 : 0;
      mine = __reduce_add_sync(0xffffffffu, mine);
      __syncthreads();
      if (threadIdx.x % 32 == 0 && mine != 0) atomicAdd(&matches, mine);
      __syncthreads();
      earlier = matches;
    }
    // A token that repeats an expert (a rejected round) can push a later
    // token's count past the region: such a row is not written.
    const bool send = !bad && e >= 0 && earlier < g.max_tokens;
    const int r = send ? e / J : 0, j = send ? e % J : 0;
    const int64_t at = slot_index(g, j, g.rank, earlier);
    if (threadIdx.x == 0) {
      if (bad) atomicMin(&c->bad_input, static_cast<int>(pair));
      b.weights[pair] = wk;
      b.slot[pair] = send ? earlier : -1;
      if (send) {
        atomicAdd(&b.counts[e], 1);
        int32_t* meta = reinterpret_cast<int32_t*>(b.shared[r] + g.meta[round & 1]) + 2 * at;
        meta[0] = t;
        meta[1] = k;
      }
    }
    if (send) {
      uint8_t* dst = b.shared[r] + g.rows[round & 1] + at * layout.row_bytes;
      put_row<F>(x + static_cast<int64_t>(t) * g.hidden, t, layout, dst, g.hidden, nullptr);
    }
    __syncthreads();  // every thread read `matches` before the next pair resets it
  }
  if (!last_block(&c->dispatch_blocks_done)) return;
  // The last block: every row of the round is stored; publish, then reset.
  const int bad_at = load_volatile(&c->bad_input);
  const bool rejected = reject || bad_at != INT_MAX;
  for (int r = threadIdx.x; r < g.ranks; r += blockDim.x) b.sent_to[r] = 0;
  __syncthreads();
  for (int wi = threadIdx.x; wi < E; wi += blockDim.x) {
    const int r = wi / J, j = wi % J;
    const int n = load_volatile(&b.counts[wi]);
    b.counts[wi] = 0;
    if (n != 0) atomicAdd(&b.sent_to[r], n);
    store_release(reinterpret_cast<uint64_t*>(b.shared[r] + g.counts[round & 1]) + static_cast<int64_t>(g.rank) * J + j,
                  wire::pack_word(round, rejected, rejected ? 0u : static_cast<uint32_t>(n)));
  }
  if (threadIdx.x == 0) {
    if (reject) {
      c->failed = 1;  // the host threw already
    } else if (rejected) {
      report(b, {D::kBadInput, g.rank, bad_at / K, bad_at % K, idx[bad_at], w[bad_at], static_cast<uint32_t>(round), 0});
    }
    c->round = round;
    c->dispatch_blocks_done = 0;
    c->recv_rows = 0;
    c->bad_input = INT_MAX;
  }
}

// Threads spin on words[i * stride] for i < n (word i from rank i) until each
// carries the round or g.timeout_ns pass; reports the first silent or rejecting
// rank and returns false then (in every thread of the block).
__device__ bool wait_words(const G& g, const B& b, const uint64_t* words, int stride, uint64_t round, uint32_t op,
                           uint64_t* got) {
  __shared__ int silent, rejecting;
  if (threadIdx.x == 0) silent = rejecting = INT_MAX;
  __syncthreads();
  const uint64_t start = now_ns();
  for (int i = threadIdx.x; i < g.ranks; i += blockDim.x) {
    uint64_t v = load_acquire(words + static_cast<int64_t>(i) * stride);
    while (wire::word_round(v) != static_cast<uint32_t>(round)) {
      if (now_ns() - start > g.timeout_ns) {
        atomicMin(&silent, i);
        break;
      }
      __nanosleep(100);
      v = load_acquire(words + static_cast<int64_t>(i) * stride);
    }
    if (wire::word_round(v) == static_cast<uint32_t>(round) && wire::word_rejected(v)) atomicMin(&rejecting, i);
    got[i] = v;
  }
  __syncthreads();
  if (silent == INT_MAX && rejecting == INT_MAX) return true;
  if (threadIdx.x == 0) {
    report(b, {silent != INT_MAX ? D::kTimeout : D::kRejected, silent != INT_MAX ? silent : rejecting, 0, 0, 0, 0.0f,
               static_cast<uint32_t>(round), op});
  }
  return false;
}

// The threads of gridDim.y blocks copy n rows of `Word`s from slot regions into
// consecutive output rows, each thread kAhead words ahead of its stores. Row q
// comes from source rank s (first[s] <= q < first[s + 1]), slot q - first[s].
template <class Word>
__device__ inline void copy_expert_rows(const G& g, int j, int n, const int* first, const uint8_t* slots,
                                        uint8_t* out, int64_t row_bytes) {
  const int64_t words = row_bytes / static_cast<int64_t>(sizeof(Word));
  const int64_t total = n * words;
  const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.x;
  for (int64_t i0 = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; i0 < total; i0 += kAhead * stride) {
    Word v[kAhead];
    int64_t to[kAhead];
#pragma unroll
    for (int a = 0; a < kAhead; ++a) {
      const int64_t i = i0 + a * stride;
      to[a] = -1;
      if (i >= total) continue;
      const int q = static_cast<int>(i / words);
      const int64_t within = i - q * words;
      int s = 0;
      while (first[s + 1] <= q) ++s;
      to[a] = q * words + within;
      v[a] = reinterpret_cast<const Word*>(slots + slot_index(g, j, s, q - first[s]) * row_bytes)[within];
    }
#pragma unroll
    for (int a = 0; a < kAhead; ++a) {
      if (to[a] >= 0) reinterpret_cast<Word*>(out)[to[a]] = v[a];
    }
  }
}

// Expert j's part of a receive, by the blocks (., y) of the grid: false once the
// wait failed (reported).
__device__ inline bool receive_expert(const G& g, const B& b, int j, int64_t row_bytes) {
  extern __shared__ uint64_t words[];  // [ranks], then first[ranks + 1]
  LowLatencyControl* const c = b.control;
  const uint64_t round = c->round;
  const int P = g.ranks, J = g.local_experts;
  const uint8_t* mine = b.own_shared;
  const auto* all = reinterpret_cast<const uint64_t*>(mine + g.counts[round & 1]) + j;
  if (!wait_words(g, b, all, J, round, 0, words)) return false;
  int* first = reinterpret_cast<int*>(words + P);
  __shared__ int base;
  if (threadIdx.x == 0) {
    int acc = 0;
    for (int s = 0; s < P; ++s) {
      first[s] = acc;
      acc += static_cast<int>(wire::word_count(words[s]));
    }
    first[P] = acc;
    if (blockIdx.y == 0) {
      b.out_counts[j] = acc;
      base = atomicAdd(&c->recv_rows, acc);
    }
  }
  __syncthreads();
  const int n = first[P];
  const int64_t per_expert = static_cast<int64_t>(P) * g.max_tokens;
  const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.x;
  for (int64_t q = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; q < n; q += stride) {
    int s = 0;
    while (first[s + 1] <= q) ++s;
    const int64_t from = slot_index(g, j, s, static_cast<int>(q) - first[s]), to = j * per_expert + q;
    const int32_t* meta = reinterpret_cast<const int32_t*>(mine + g.meta[round & 1]) + 2 * from;
    b.out_src_rank[to] = s;
    b.out_src_token[to] = meta[0];
    b.out_k[to] = meta[1];
  }
  if (blockIdx.y == 0) {
    for (int q = threadIdx.x; q < n; q += blockDim.x) b.recv_list[base + q] = static_cast<int32_t>(j * per_expert + q);
  }
  // Slot regions and the output start 256-byte aligned.
  const uint8_t* slots = mine + g.rows[round & 1];
  uint8_t* out = b.out_rows + j * per_expert * row_bytes;
  if (row_bytes % sizeof(uint4) == 0) {
    copy_expert_rows<uint4>(g, j, n, first, slots, out, row_bytes);
  } else {
    copy_expert_rows<uint8_t>(g, j, n, first, slots, out, row_bytes);
  }
  return true;
}

// Block (x, y) takes experts j = x, x + gridDim.x, ... in turn: waits for expert
// j's word from every source, then the gridDim.y blocks of expert j copy its slot
// regions source by source into the output rows together; block (x, 0) also takes
// the expert's entries of the received row list. The words come from the send
// kernels of the node's GPUs, none from a block of this grid: any grid finishes.
__global__ void __launch_bounds__(kBlockThreads) dispatch_recv_kernel(G g, B b, int64_t row_bytes) {
  LowLatencyControl* const c = b.control;
  if (load_volatile(&c->failed)) return;
  for (int j = blockIdx.x; j < g.local_experts; j += gridDim.x) {
    if (!receive_expert(g, b, j, row_bytes)) return;
  }
}

// Block i: received rows recv_list[i], recv_list[i + gridDim.x], ..., each
// encoded straight into its source's (token, k) slot; the last block publishes
// one word per source.
template <class F, class Src>
__global__ void __launch_bounds__(kBlockThreads)
    combine_send_kernel(G g, B b, Layout layout, const Src* y, bool reject) {
  LowLatencyControl* const c = b.control;
  if (load_volatile(&c->failed)) return;
  const uint64_t round = c->round;
  const int rows = reject ? 0 : c->recv_rows;
  for (int q = blockIdx.x; q < rows; q += gridDim.x) {
    const int64_t row = b.recv_list[q];
    const int s = b.out_src_rank[row];
    const int64_t at = static_cast<int64_t>(b.out_src_token[row]) * g.topk + b.out_k[row];
    put_row<F>(y + row * g.hidden, row, layout, b.shared[s] + g.combine_rows + at * layout.row_bytes, g.hidden,
               &c->bad_output);
    if (threadIdx.x == 0) atomicAdd(&b.rows_to[s], 1);
  }
  if (!last_block(&c->combine_blocks_done)) return;
  const unsigned long long bad = load_volatile(&c->bad_output);
  const bool rejected = reject || bad != ~0ull;
  for (int s = threadIdx.x; s < g.ranks; s += blockDim.x) {
    const uint32_t n = rejected ? 0u : static_cast<uint32_t>(load_volatile(&b.rows_to[s]));
    store_release(reinterpret_cast<uint64_t*>(b.shared[s] + g.combine_flags) + g.rank,
                  wire::pack_word(round, rejected, n));
    b.rows_to[s] = 0;
  }
  if (threadIdx.x == 0) {
    if (reject) {
      c->failed = 1;  // the host threw already
    } else if (rejected) {
      const int64_t per_expert = static_cast<int64_t>(g.ranks) * g.max_tokens;
      const int64_t row = static_cast<int64_t>(bad / static_cast<unsigned long long>(g.hidden));
      report(b, {D::kBadOutput, g.rank, static_cast<int32_t>(row / per_expert), static_cast<int32_t>(row % per_expert),
                 static_cast<int32_t>(bad % static_cast<unsigned long long>(g.hidden)), 0.0f,
                 static_cast<uint32_t>(round), 1});
    }
    c->combine_blocks_done = 0;
    c->bad_output = ~0ull;
  }
}

// Rows of a token combine_recv fetches before it adds any.
constexpr int kCombineAhead = 8;

// Token t's output row, by the blocks (., y) of the grid; weight and present:
// shared memory for the token's K weights and whether each k has a row.
template <class F, class Dst>
__device__ inline void sum_token(const G& g, const B& b, const Layout& layout, const uint8_t* rows, int t,
                                 float* weight, int* present, Dst* out) {
  const int K = g.topk;
  for (int k = threadIdx.x; k < K; k += blockDim.x) {
    const int64_t at = static_cast<int64_t>(t) * K + k;
    present[k] = b.slot[at] >= 0;
    weight[k] = b.weights[at];
  }
  __syncthreads();
  for (int chunk = blockIdx.y; chunk < row_chunks(g.hidden); chunk += gridDim.y) {
    const Lane l = row_lane(t, chunk, g.hidden);
    if (!l.in_range) continue;
    Elems a;
#pragma unroll
    for (int i = 0; i < kElemsPerLane; ++i) a[i] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += kCombineAhead) {
      typename F::Fetched f[kCombineAhead];
#pragma unroll
      for (int i = 0; i < kCombineAhead; ++i) {
        const int k = k0 + i;
        if (k < K && present[k]) f[i] = F::fetch(rows + (int64_t{t} * K + k) * layout.row_bytes, l, layout);
      }
#pragma unroll
      for (int i = 0; i < kCombineAhead; ++i) {
        const int k = k0 + i;
        if (k >= K || !present[k]) continue;
        Elems v;
        F::unpack(f[i], l, v);
        const float wk = weight[k];
#pragma unroll
        for (int e = 0; e < kElemsPerLane; ++e) a[e] = x86::add(a[e], x86::mul(wk, v[e]));
      }
    }
    store8(out + static_cast<int64_t>(t) * g.hidden + l.col0, l.valid, a);
  }
  __syncthreads();  // weight and present are the next token's after this
}

// Block (x, y): waits for every owner's word (each block, so none reads early),
// then takes tokens t = x, x + gridDim.x, ... in turn and sums token t's rows in k
// order with the CPU's arithmetic over the tile chunks y, y + gridDim.y, ... of
// the row; block (0, 0) checks the row counts. A thread fetches kCombineAhead
// rows' lanes before it adds them (in k order). The words come from the send
// kernels of the node's GPUs, none from a block of this grid: any grid finishes.
template <class F, class Dst>
__global__ void __launch_bounds__(kBlockThreads)
    combine_recv_kernel(G g, B b, Layout layout, int num_tokens, Dst* out) {
  extern __shared__ uint64_t words[];  // [ranks], then weight[topk], then present[topk]
  LowLatencyControl* const c = b.control;
  if (load_volatile(&c->failed)) return;
  const uint64_t round = c->round;
  const uint8_t* rows = b.own_shared + g.combine_rows;
  if (!wait_words(g, b, reinterpret_cast<const uint64_t*>(b.own_shared + g.combine_flags), 1, round, 1, words)) {
    return;
  }
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) {
    for (int o = 0; o < g.ranks; ++o) {
      const int32_t n = static_cast<int32_t>(wire::word_count(words[o]));
      if (n != b.sent_to[o]) {
        report(b, {D::kMismatch, o, b.sent_to[o], 0, n, 0.0f, static_cast<uint32_t>(round), 1});
        break;
      }
    }
  }
  const int K = g.topk;
  auto* weight = reinterpret_cast<float*>(words + g.ranks);
  auto* present = reinterpret_cast<int*>(weight + K);
  for (int t = blockIdx.x; t < num_tokens; t += gridDim.x) {
    sum_token<F>(g, b, layout, rows, t, weight, present, out);
  }
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

}  // namespace
}  // namespace detail

void low_latency_prepare(const LowLatencyGeometry& g) {
  using namespace detail;
  visit_dispatch_format(g.dispatch_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using Src = std::remove_pointer_t<decltype(type)>;
      preload(reinterpret_cast<const void*>(&dispatch_send_kernel<F, Src>));
    });
  });
  preload(reinterpret_cast<const void*>(&dispatch_recv_kernel));
  visit_format(g.combine_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using T = std::remove_pointer_t<decltype(type)>;
      preload(reinterpret_cast<const void*>(&combine_send_kernel<F, T>));
      preload(reinterpret_cast<const void*>(&combine_recv_kernel<F, T>));
    });
  });
}

namespace {
// Blocks for `units` units of work, each block looping when there are more (past
// kMaxSendBlocks or the SM budget).
unsigned send_blocks(const LowLatencyGeometry& g, int64_t units) {
  return budget_blocks(units < detail::kMaxSendBlocks ? units : detail::kMaxSendBlocks, g.sm_budget);
}
// `groups` experts or tokens, each split over blocks so that they make about
// kRecvBlocks, at most `most` a group (the units a group splits into); within the
// SM budget, the blocks loop over groups.
dim3 recv_grid(const LowLatencyGeometry& g, int64_t groups, int64_t most) {
  const int64_t want = (detail::kRecvBlocks + groups - 1) / (groups > 0 ? groups : 1);
  const unsigned split = static_cast<unsigned>(want < 1 ? 1 : (want < most ? want : most));
  const GridShape grid = budget_grid({static_cast<unsigned>(groups), split}, g.sm_budget);
  return dim3(grid.x, grid.y);
}
}  // namespace

void low_latency_dispatch_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* x,
                               const int32_t* topk_idx, const float* topk_weights, int num_tokens, bool reject,
                               void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  const Layout layout = layout_of(g.dispatch_format, g.hidden);
  const unsigned blocks = send_blocks(g, static_cast<int64_t>(num_tokens) * g.topk);
  visit_dispatch_format(g.dispatch_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using Src = std::remove_pointer_t<decltype(type)>;
      dispatch_send_kernel<F, Src><<<blocks, kBlockThreads, 0, s>>>(g, b, layout, static_cast<const Src*>(x),
                                                                     topk_idx, topk_weights, num_tokens, reject);
    });
  });
  check(cudaGetLastError(), "low-latency dispatch send kernel launch");
}

void low_latency_dispatch_recv(const LowLatencyGeometry& g, const LowLatencyBuffers& b, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  const int64_t row_bytes = layout_of(g.dispatch_format, g.hidden).row_bytes;
  const std::size_t smem = sizeof(uint64_t) * g.ranks + sizeof(int) * (g.ranks + 1);
  // An expert receives a few rows on average: its blocks split them word by word.
  const dim3 grid = recv_grid(g, g.local_experts, 64);
  dispatch_recv_kernel<<<grid, kBlockThreads, smem, s>>>(g, b, row_bytes);
  check(cudaGetLastError(), "low-latency dispatch receive kernel launch");
}

void low_latency_combine_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* expert_out,
                              bool reject, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  const Layout layout = layout_of(g.combine_format, g.hidden);
  const unsigned blocks = send_blocks(g, low_latency_max_recv_rows(g));
  visit_format(g.combine_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using Src = std::remove_pointer_t<decltype(type)>;
      combine_send_kernel<F, Src><<<blocks, kBlockThreads, 0, s>>>(g, b, layout, static_cast<const Src*>(expert_out),
                                                                   reject);
    });
  });
  check(cudaGetLastError(), "low-latency combine send kernel launch");
}

void low_latency_combine_recv(const LowLatencyGeometry& g, const LowLatencyBuffers& b, int num_tokens, void* out,
                              void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  const Layout layout = layout_of(g.combine_format, g.hidden);
  const int tokens = num_tokens > 0 ? num_tokens : 1;
  // A token's row splits into its tile chunks, one block each.
  const dim3 grid = recv_grid(g, tokens, row_chunks(g.hidden));
  const std::size_t smem = sizeof(uint64_t) * g.ranks + (sizeof(float) + sizeof(int)) * g.topk;
  visit_format(g.combine_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using Dst = std::remove_pointer_t<decltype(type)>;
      combine_recv_kernel<F, Dst><<<grid, kBlockThreads, smem, s>>>(g, b, layout, num_tokens, static_cast<Dst*>(out));
    });
  });
  check(cudaGetLastError(), "low-latency combine receive kernel launch");
}

}  // namespace epcomm::kernels::cuda
