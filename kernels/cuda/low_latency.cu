// SPDX-License-Identifier: MIT
// The low-latency exchange's kernels (epcomm_kernels/cuda_low_latency.hpp), built
// from the CUDA codecs' per-tile code (tile_formats.cuh) so rows are the bytes the
// CPU codecs write.
//
// Ordering: a send kernel's block ends with a barrier, then one thread fences
// (__threadfence_system(), cumulative: it orders the whole block's stores) and
// counts the block done with an atomic; the last block sees every count, fences
// again and stores the arrival words with st.release.sys. A wait reads the
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
// then sees every other block's stores. One thread fences for the block: the
// barrier orders the block's stores before that fence, and a PTX fence is
// cumulative, so the wait for the block's outstanding NVLink writes is paid once
// per block, not once per thread.
__device__ inline bool last_block(unsigned int* done) {
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence_system();
    last = atomicAdd(done, 1u) == gridDim.x * gridDim.y - 1;
    if (last) __threadfence_system();
  }
  __syncthreads();
  return last;
}

// Blocks of the kernels that loop over tokens or rows: this many per SM
// (kBlockThreads threads each) stay resident together, so the grid is one wave.
// The dispatch kernels' __launch_bounds__ keep their registers within it;
// combine_send's LogFMT encoders would spill there, and need more than one wave.
constexpr int kBlocksPerSm = 4;
// How many blocks combine_recv aims for, split over tokens.
constexpr int kRecvBlocks = 1024;

// The device path sends a token's encoded row once per owner rank, not once per
// (token, k): the dispatch rows region of the round's parity begins with
// [ranks][max_tokens] token rows (the region holds local_experts times as many),
// and the slots' (token, k) entries say which token row each slot takes.
__device__ inline int64_t token_row(const G& g, int s, int t) {
  return static_cast<int64_t>(s) * g.max_tokens + t;
}

// The block copies n bytes from src (shared memory, 16-byte aligned) to dst with
// the widest stores dst's alignment and n allow.
__device__ inline void copy_staged(const uint8_t* src, uint8_t* dst, int64_t n) {
  if (n % 16 == 0 && aligned<16>(dst)) {
    for (int64_t i = threadIdx.x; i < n / 16; i += blockDim.x) {
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
    }
  } else if (n % 4 == 0 && aligned<4>(dst)) {
    for (int64_t i = threadIdx.x; i < n / 4; i += blockDim.x) {
      reinterpret_cast<uint32_t*>(dst)[i] = reinterpret_cast<const uint32_t*>(src)[i];
    }
  } else {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
  }
}

// Bytes of dispatch_send_kernel's dynamic shared memory: the encoded row
// (rounded to 16), the token's entries, weights and slots, a flag per owner rank.
__host__ __device__ inline int64_t staged_bytes(int64_t row_bytes) { return (row_bytes + 15) / 16 * 16; }
inline std::size_t dispatch_send_smem(const G& g, int64_t row_bytes) {
  return static_cast<std::size_t>(staged_bytes(row_bytes)) + sizeof(int) * (3 * static_cast<std::size_t>(g.topk) + g.ranks);
}

// start[i] = sum of count[0..i) for i <= n, by the block (n counts in shared
// memory, start too): each thread sums a run of counts, a warp scan and a scan of
// the warp totals give each run's start.
__device__ void block_exclusive_scan(const int* count, int n, int* start) {
  __shared__ int warp_total[kBlockThreads / 32];
  const int per = (n + kBlockThreads - 1) / kBlockThreads;
  const int lo = min(n, static_cast<int>(threadIdx.x) * per), hi = min(n, lo + per);
  int run = 0;
  for (int i = lo; i < hi; ++i) run += count[i];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int incl = run;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) warp_total[warp] = incl;
  __syncthreads();
  int before = incl - run;
  for (int w2 = 0; w2 < warp; ++w2) before += warp_total[w2];
  for (int i = lo; i < hi; ++i) {
    start[i] = before;
    before += count[i];
  }
  if (threadIdx.x == kBlockThreads - 1) start[n] = before;
  __syncthreads();
}

// The staging message of round `round` for rank r on another node (pinned host
// memory the proxy sends from): dispatch messages first, then combine ones.
__device__ inline uint8_t* dispatch_staging(const G& g, const B& b, int r, uint64_t round) {
  return b.staging + (static_cast<int64_t>(low_latency_remote_index(g, r)) * 2 + (round & 1)) * g.dispatch_message;
}
__device__ inline uint8_t* combine_staging(const G& g, const B& b, int r, uint64_t round) {
  const int64_t remote = g.ranks - g.ranks_per_node;
  return b.staging + remote * 2 * g.dispatch_message +
         (static_cast<int64_t>(low_latency_remote_index(g, r)) * 2 + (round & 1)) * g.combine_message;
}

// The block tells the proxy that `kind`'s message of `round` for every rank on
// another node is staged, bytes(r) long: one command per rank into the kind's
// ring in pinned host memory, then the ring's head with st.release.sys, behind a
// system fence (the caller's block already fenced the grid's staging writes:
// last_block). One producer per ring: a kind's kernels run one after another.
// Waits, bounded, while the ring is full; on timeout reports kProxyStalled.
template <class Bytes>
__device__ void push_commands(const G& g, const B& b, wire::ProxyKind kind, uint64_t round, Bytes bytes) {
  const int remote = g.ranks - g.ranks_per_node;
  if (remote == 0) return;
  LowLatencyControl* const c = b.control;
  const int k = static_cast<int>(kind);
  uint8_t* const ring = b.ring[k];
  const unsigned long long head = c->ring_head[k];
  __shared__ int room;
  if (threadIdx.x == 0) {
    const auto* tail = reinterpret_cast<const uint64_t*>(ring + wire::kRingTailOffset);
    const uint64_t start = now_ns();
    room = 1;
    while (head + remote - load_acquire(tail) > g.ring_capacity) {
      if (now_ns() - start > g.timeout_ns) {
        room = 0;
        break;
      }
      __nanosleep(1000);
    }
  }
  __syncthreads();
  if (room == 0) {
    if (threadIdx.x == 0) report(b, {D::kProxyStalled, g.rank, 0, 0, 0, 0.0f, static_cast<uint32_t>(round), static_cast<uint32_t>(k)});
    return;
  }
  auto* const commands = reinterpret_cast<wire::ProxyCommand*>(ring + wire::kRingCommandsOffset);
  const int first_local = g.rank / g.ranks_per_node * g.ranks_per_node;
  for (int i = threadIdx.x; i < remote; i += blockDim.x) {
    const int r = i < first_local ? i : i + g.ranks_per_node;
    wire::ProxyCommand cmd;
    cmd.kind = kind;
    cmd.peer = r;
    cmd.seq = round;
    cmd.bytes = static_cast<uint64_t>(bytes(r));
    commands[(head + i) & (g.ring_capacity - 1)] = cmd;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence_system();
    store_release(reinterpret_cast<uint64_t*>(ring + wire::kRingHeadOffset), head + remote);
    c->ring_head[k] = head + remote;
  }
}

// Earlier tokens' entries a thread of dispatch_send loads before it compares any.
constexpr int kScanAhead = 4;

// Block i: tokens i, i + gridDim.x, ... (a block per token at decode sizes, one
// wave). The block encodes the token's row once into shared memory (encoding
// needs no routing, so its loads go out first), then checks the token's entries
// (the host's send_plan rules) and finds each one's slot: the number of earlier
// tokens' entries that chose the same expert, counted with the block's threads
// each comparing its share of them with the token's K experts. It writes each
// slot's (token, k) into the owner and the encoded row once into every owner
// rank that one of the token's experts lives on: per token at most
// min(topk, ranks) rows cross NVLink instead of topk.
template <class F, class Src>
__global__ void __launch_bounds__(kBlockThreads, kBlocksPerSm)
    dispatch_send_kernel(G g, B b, Layout layout, const Src* x, const int32_t* idx, const float* w, int num_tokens,
                         bool reject) {
  extern __shared__ uint4 staged[];  // the encoded row, then entry[topk], weight[topk], earlier[topk], to_owner[ranks]
  LowLatencyControl* const c = b.control;
  const uint64_t round = c->round + 1;    // the last block stores it, after every block read it
  if (load_volatile(&c->failed)) return;  // the same in every block: set by an earlier kernel only
  const int K = g.topk, J = g.local_experts, E = J * g.ranks;
  const int64_t row_bytes = layout.row_bytes;
  int* const entry = reinterpret_cast<int*>(reinterpret_cast<uint8_t*>(staged) + staged_bytes(row_bytes));
  float* const weight = reinterpret_cast<float*>(entry + K);
  int* const earlier = reinterpret_cast<int*>(weight + K);
  int* const to_owner = earlier + K;
  const int tokens = reject ? 0 : num_tokens;
  for (int t = blockIdx.x; t < tokens; t += gridDim.x) {
    const int64_t first = static_cast<int64_t>(t) * K;
    // Every load of the token's first steps goes out before any result is used:
    // earlier entries (kScanAhead a thread), the token's entries, its row.
    int seen[kScanAhead];
    const auto load_seen = [&](int64_t i0) {
#pragma unroll
      for (int a = 0; a < kScanAhead; ++a) {
        const int64_t i = i0 + static_cast<int64_t>(a) * blockDim.x;
        seen[a] = i < first ? idx[i] : -1;
      }
    };
    load_seen(threadIdx.x);
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
      entry[k] = idx[first + k];
      weight[k] = w[first + k];
      earlier[k] = 0;
    }
    for (int r = threadIdx.x; r < g.ranks; r += blockDim.x) to_owner[r] = 0;
    if constexpr (F::kFormat == Format::kFP8) {
      // The bytes between the codes and the 4-byte aligned scales, which no
      // encode writes: zero, as in the slots the host's rows are compared with.
      auto* row = reinterpret_cast<uint8_t*>(staged);
      for (int64_t i = g.hidden + static_cast<int64_t>(threadIdx.x); i < layout.meta_offset; i += blockDim.x) row[i] = 0;
    }
    put_row<F>(x + static_cast<int64_t>(t) * g.hidden, t, layout, reinterpret_cast<uint8_t*>(staged), g.hidden,
               nullptr);
    __syncthreads();
    // An earlier entry matches at most one of a valid token's experts; a token
    // that repeats one is rejected, its rows do not matter.
    for (int64_t i0 = threadIdx.x; i0 < first; i0 += static_cast<int64_t>(kScanAhead) * blockDim.x) {
      if (i0 != threadIdx.x) load_seen(i0);
#pragma unroll
      for (int a = 0; a < kScanAhead; ++a) {
        if (seen[a] < 0) continue;
        for (int k = 0; k < K; ++k) {
          if (entry[k] == seen[a]) atomicAdd(&earlier[k], 1);
        }
      }
    }
    __syncthreads();
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
      const int e = entry[k];
      const float wk = weight[k];
      bool bad = e < -1 || e >= E || (e != -1 && !elem::is_finite(wk));
      for (int k2 = 0; k2 < k && e != -1; ++k2) bad = bad || entry[k2] == e;
      // A token that repeats an expert (a rejected round) can push a later
      // token's count past the region: such a row is not written.
      const int n = earlier[k];
      const bool send = !bad && e >= 0 && n < g.max_tokens;
      if (bad) atomicMin(&c->bad_input, static_cast<int>(first + k));
      b.weights[first + k] = wk;
      b.slot[first + k] = send ? n : -1;
      if (send) {
        const int r = e / J, j = e % J;
        atomicAdd(&b.counts[e], 1);
        int32_t* meta =
            low_latency_remote(g, r)
                ? reinterpret_cast<int32_t*>(dispatch_staging(g, b, r, round) + wire::device_dispatch_meta_offset(J)) +
                      2 * (static_cast<int64_t>(j) * g.max_tokens + n)
                : reinterpret_cast<int32_t*>(b.shared[r] + g.meta[round & 1]) + 2 * slot_index(g, j, g.rank, n);
        meta[0] = t;
        meta[1] = k;
        to_owner[r] = 1;
      }
    }
    __syncthreads();
    for (int r = 0; r < g.ranks; ++r) {
      if (to_owner[r] == 0) continue;
      uint8_t* const dst =
          low_latency_remote(g, r)
              ? dispatch_staging(g, b, r, round) + wire::device_dispatch_rows_offset(J, g.max_tokens) + t * row_bytes
              : b.shared[r] + g.rows[round & 1] + token_row(g, g.rank, t) * row_bytes;
      copy_staged(reinterpret_cast<const uint8_t*>(staged), dst, row_bytes);
    }
    __syncthreads();  // the next token rewrites the staged row and the entries
  }
  if (!last_block(&c->dispatch_blocks_done)) return;
  // The last block: every row of the round is stored; publish, then reset.
  const int bad_at = load_volatile(&c->bad_input);
  const bool rejected = reject || bad_at != INT_MAX;
  for (int r = threadIdx.x; r < g.ranks; r += blockDim.x) b.sent_to[r] = 0;
  const bool across_nodes = g.ranks_per_node < g.ranks;
  if (across_nodes && !rejected) {
    // Where each (t, k) sent to another node comes back in the owner's combine
    // message: rows to the owner's experts before e, then the slot (the owner
    // computes the same from its words: dispatch_recv_kernel's stage_pos).
    block_exclusive_scan(b.counts, E, b.sent_prefix);
    for (int64_t at = threadIdx.x; at < static_cast<int64_t>(tokens) * K; at += blockDim.x) {
      const int e = idx[at], n = b.slot[at];
      int32_t row = -1;
      if (n >= 0 && low_latency_remote(g, e / J)) {
        const int o = e / J;
        row = static_cast<int32_t>(low_latency_remote_index(g, o) * g.max_rows_to_rank + b.sent_prefix[e] -
                                   b.sent_prefix[o * J] + n);
      }
      b.remote_row[at] = row;
    }
  }
  __syncthreads();
  for (int wi = threadIdx.x; wi < E; wi += blockDim.x) {
    const int r = wi / J, j = wi % J;
    const int n = load_volatile(&b.counts[wi]);
    b.counts[wi] = 0;
    if (n != 0) atomicAdd(&b.sent_to[r], n);
    uint64_t* const word = low_latency_remote(g, r)
                               ? reinterpret_cast<uint64_t*>(dispatch_staging(g, b, r, round)) + j
                               : reinterpret_cast<uint64_t*>(b.shared[r] + g.counts[round & 1]) +
                                     static_cast<int64_t>(g.rank) * J + j;
    store_release(word, wire::pack_word(round, rejected, rejected ? 0u : static_cast<uint32_t>(n)));
  }
  if (across_nodes) {
    __syncthreads();
    const int64_t bytes = static_cast<int64_t>(wire::device_dispatch_rows_offset(J, g.max_tokens)) + tokens * row_bytes;
    push_commands(g, b, wire::ProxyKind::kDispatch, round, [&](int) { return bytes; });
  }
  if (threadIdx.x == 0) {
    if (reject) {
      c->failed = 1;  // the host threw already
    } else if (rejected) {
      report(b, {D::kBadInput, g.rank, bad_at / K, bad_at % K, idx[bad_at], w[bad_at], static_cast<uint32_t>(round), 0});
    }
    c->round = round;
    c->dispatch_blocks_done = 0;
    c->recv_rows = 0;  // until dispatch_recv lays the round's rows out
    c->bad_input = INT_MAX;
  }
}

// Threads spin on the n words words[0..n) (word i from rank i / per_rank) until
// each carries the round or g.timeout_ns pass; reports the first silent or
// rejecting rank and returns false then (in every thread of the block).
__device__ bool wait_words(const G& g, const B& b, const uint64_t* words, int n, int per_rank, uint64_t round,
                           uint32_t op, uint64_t* got) {
  __shared__ int silent, rejecting;
  if (threadIdx.x == 0) silent = rejecting = INT_MAX;
  __syncthreads();
  const uint64_t start = now_ns();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    uint64_t v = load_acquire(words + i);
    while (wire::word_round(v) != static_cast<uint32_t>(round)) {
      if (now_ns() - start > g.timeout_ns) {
        atomicMin(&silent, i / per_rank);
        break;
      }
      __nanosleep(100);
      v = load_acquire(words + i);
    }
    if (wire::word_round(v) == static_cast<uint32_t>(round) && wire::word_rejected(v)) {
      atomicMin(&rejecting, i / per_rank);
    }
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

// A warp's part of dispatch_recv: kAhead words a lane, all loaded before any is stored.
constexpr int kRecvWarpWords = 32 * kAhead;

template <class Word>
__device__ inline void copy_row_part(const uint8_t* from, uint8_t* to, int64_t words, int part) {
  const int lane = threadIdx.x % 32;
  Word v[kAhead];
#pragma unroll
  for (int a = 0; a < kAhead; ++a) {
    const int64_t i = static_cast<int64_t>(part) * kRecvWarpWords + a * 32 + lane;
    if (i < words) v[a] = reinterpret_cast<const Word*>(from)[i];
  }
#pragma unroll
  for (int a = 0; a < kAhead; ++a) {
    const int64_t i = static_cast<int64_t>(part) * kRecvWarpWords + a * 32 + lane;
    if (i < words) reinterpret_cast<Word*>(to)[i] = v[a];
  }
}

// Every block waits for all P x J words of the round (one a thread), scans their
// counts in output order (expert, then source) and so knows where every output
// row comes from. Output row R (over all experts) is split into parts of
// kRecvWarpWords words, and warp w of the grid copies parts w, w + warps, ...
// from its source's token row: every row's copy is spread over the whole GPU
// whatever the experts' counts. The warp copying part 0 of a row also writes its
// source rank, token, k and its entry of the received row list. The words come
// from the send kernels of the node's GPUs, none from a block of this grid: any
// grid finishes.
template <class Word>
__global__ void __launch_bounds__(kBlockThreads, kBlocksPerSm) dispatch_recv_kernel(G g, B b, int64_t row_bytes) {
  // [ranks * J] words, then count[J * ranks], start[J * ranks + 1]; across nodes
  // also by_source[ranks * J], source_start[ranks * J + 1] (source-major order).
  extern __shared__ uint64_t words[];
  LowLatencyControl* const c = b.control;
  if (load_volatile(&c->failed)) return;
  const uint64_t round = c->round;
  const int P = g.ranks, J = g.local_experts, n = P * J;
  const uint8_t* mine = b.own_shared;
  const auto* all = reinterpret_cast<const uint64_t*>(mine + g.counts[round & 1]);  // word s * J + j
  if (!wait_words(g, b, all, n, J, round, 0, words)) return;
  int* const count = reinterpret_cast<int*>(words + n);  // count[j * P + s]
  int* const start = count + n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int j = i / P, s = i % P;
    count[i] = static_cast<int>(wire::word_count(words[static_cast<int64_t>(s) * J + j]));
  }
  __syncthreads();
  block_exclusive_scan(count, n, start);
  const bool across_nodes = g.ranks_per_node < P;
  int* const by_source = start + n + 1;
  int* const source_start = by_source + n;
  if (across_nodes) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      by_source[i] = static_cast<int>(wire::word_count(words[i]));  // word s * J + j
    }
    __syncthreads();
    block_exclusive_scan(by_source, n, source_start);
  }
  const int total = start[n];
  const int64_t per_expert = static_cast<int64_t>(P) * g.max_tokens;
  if (blockIdx.x == 0) {
    for (int j = threadIdx.x; j < J; j += blockDim.x) b.out_counts[j] = start[(j + 1) * P] - start[j * P];
    if (threadIdx.x == 0) c->recv_rows = total;
  }
  const int64_t words_per_row = row_bytes / static_cast<int64_t>(sizeof(Word));
  const int parts = static_cast<int>((words_per_row + kRecvWarpWords - 1) / kRecvWarpWords);
  const int64_t units = static_cast<int64_t>(total) * parts;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const uint8_t* tokens = mine + g.rows[round & 1];
  const auto* meta_all = reinterpret_cast<const int32_t*>(mine + g.meta[round & 1]);
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; u < units; u += warps) {
    const int R = static_cast<int>(u / parts), part = static_cast<int>(u % parts);
    // The (expert, source) pair of row R: the last p with start[p] <= R.
    int lo = 0, hi = n;  // start[lo] <= R < start[hi]
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (start[mid] <= R) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    const int j = lo / P, s = lo % P;
    const int64_t to = j * per_expert + (R - start[j * P]);
    const int32_t* meta = meta_all + 2 * slot_index(g, j, s, R - start[lo]);
    const int t = meta[0];
    if (part == 0 && threadIdx.x % 32 == 0) {
      b.out_src_rank[to] = s;
      b.out_src_token[to] = t;
      b.out_k[to] = meta[1];
      b.recv_list[R] = static_cast<int32_t>(to);
      // A row from another node returns in its source's combine message, by
      // local expert then slot (dispatch_send_kernel's remote_row).
      if (across_nodes && low_latency_remote(g, s)) {
        b.stage_pos[R] = source_start[s * J + j] - source_start[s * J] + (R - start[lo]);
      }
    }
    copy_row_part<Word>(tokens + token_row(g, s, t) * row_bytes, b.out_rows + to * row_bytes, words_per_row, part);
  }
}

// Block i: received rows recv_list[i], recv_list[i + gridDim.x], ..., each
// encoded straight into its source's (token, k) slot; the block counts its rows
// per source in shared memory and adds them to rows_to once, and the last block
// publishes one word per source.
template <class F, class Src>
__global__ void __launch_bounds__(kBlockThreads)
    combine_send_kernel(G g, B b, Layout layout, const Src* y, bool reject) {
  extern __shared__ int block_rows_to[];  // [ranks]
  LowLatencyControl* const c = b.control;
  const uint64_t round = c->round;
  const int rows = reject ? 0 : c->recv_rows;
  if (load_volatile(&c->failed)) return;
  for (int s = threadIdx.x; s < g.ranks; s += blockDim.x) block_rows_to[s] = 0;
  __syncthreads();
  for (int q = blockIdx.x; q < rows; q += gridDim.x) {
    const int64_t row = b.recv_list[q];
    const int s = b.out_src_rank[row];
    const int64_t at = static_cast<int64_t>(b.out_src_token[row]) * g.topk + b.out_k[row];
    uint8_t* const dst = low_latency_remote(g, s) ? combine_staging(g, b, s, round) + wire::kDeviceCombineRowsOffset +
                                                        static_cast<int64_t>(b.stage_pos[q]) * layout.row_bytes
                                                  : b.shared[s] + g.combine_rows + at * layout.row_bytes;
    put_row<F>(y + row * g.hidden, row, layout, dst, g.hidden, &c->bad_output);
    if (threadIdx.x == 0) ++block_rows_to[s];
  }
  __syncthreads();
  for (int s = threadIdx.x; s < g.ranks; s += blockDim.x) {
    if (block_rows_to[s] != 0) atomicAdd(&b.rows_to[s], block_rows_to[s]);
  }
  if (!last_block(&c->combine_blocks_done)) return;
  const unsigned long long bad = load_volatile(&c->bad_output);
  const bool rejected = reject || bad != ~0ull;
  for (int s = threadIdx.x; s < g.ranks; s += blockDim.x) {
    const uint32_t n = rejected ? 0u : static_cast<uint32_t>(load_volatile(&b.rows_to[s]));
    uint64_t* const word = low_latency_remote(g, s) ? reinterpret_cast<uint64_t*>(combine_staging(g, b, s, round))
                                                    : reinterpret_cast<uint64_t*>(b.shared[s] + g.combine_flags) + g.rank;
    store_release(word, wire::pack_word(round, rejected, n));
    b.rows_to[s] = 0;
    block_rows_to[s] = static_cast<int>(n);  // for the commands below
  }
  if (g.ranks_per_node < g.ranks) {
    __syncthreads();
    push_commands(g, b, wire::ProxyKind::kCombine, round, [&](int s) {
      return static_cast<int64_t>(wire::kDeviceCombineRowsOffset) + block_rows_to[s] * layout.row_bytes;
    });
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

// Token t's output row, by the blocks (., y) of the grid; weight and from:
// shared memory for the token's K weights and each k's row (null: none). A row
// from an owner on another node is in remote_landing, where the proxy put it.
template <class F, class Dst>
__device__ inline void sum_token(const G& g, const B& b, const Layout& layout, const uint8_t* rows, int t,
                                 float* weight, const uint8_t** from, Dst* out) {
  const int K = g.topk;
  for (int k = threadIdx.x; k < K; k += blockDim.x) {
    const int64_t at = static_cast<int64_t>(t) * K + k;
    const int32_t remote_row = b.remote_row != nullptr ? b.remote_row[at] : -1;
    from[k] = b.slot[at] < 0     ? nullptr
              : remote_row >= 0 ? b.remote_landing + static_cast<int64_t>(remote_row) * layout.row_bytes
                                : rows + at * layout.row_bytes;
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
        if (k < K && from[k] != nullptr) f[i] = F::fetch(from[k], l, layout);
      }
#pragma unroll
      for (int i = 0; i < kCombineAhead; ++i) {
        const int k = k0 + i;
        if (k >= K || from[k] == nullptr) continue;
        Elems v;
        F::unpack(f[i], l, v);
        const float wk = weight[k];
#pragma unroll
        for (int e = 0; e < kElemsPerLane; ++e) a[e] = x86::add(a[e], x86::mul(wk, v[e]));
      }
    }
    store8(out + static_cast<int64_t>(t) * g.hidden + l.col0, l.valid, a);
  }
  __syncthreads();  // weight and from are the next token's after this
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
  extern __shared__ uint64_t words[];  // [ranks], then from[topk], then weight[topk]
  LowLatencyControl* const c = b.control;
  if (load_volatile(&c->failed)) return;
  const uint64_t round = c->round;
  const uint8_t* rows = b.own_shared + g.combine_rows;
  if (!wait_words(g, b, reinterpret_cast<const uint64_t*>(b.own_shared + g.combine_flags), g.ranks, 1, round, 1,
                  words)) {
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
  auto* from = reinterpret_cast<const uint8_t**>(words + g.ranks);
  auto* weight = reinterpret_cast<float*>(from + K);
  for (int t = blockIdx.x; t < num_tokens; t += gridDim.x) {
    sum_token<F>(g, b, layout, rows, t, weight, from, out);
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

namespace {
// Lets `kernel` use `bytes` of dynamic shared memory (past 48 KB CUDA asks for
// it), or throws naming what needs more than the device has.
void allow_smem(const void* kernel, std::size_t bytes, const char* what) {
  int device = 0, most = 0;
  detail::check(cudaGetDevice(&device), "cudaGetDevice");
  detail::check(cudaDeviceGetAttribute(&most, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute");
  if (bytes > static_cast<std::size_t>(most)) {
    throw Error(ErrorCode::kInvalidArgument, std::string("epcomm: the low-latency exchange on the GPU needs ") +
                                                 std::to_string(bytes) + " bytes of shared memory per block for " +
                                                 what + ", more than the device's " + std::to_string(most));
  }
  if (bytes > 48 * 1024) {
    detail::check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
          "cudaFuncSetAttribute");
  }
}
// dispatch_recv_kernel's dynamic shared memory: the P x J words, their counts and starts.
std::size_t dispatch_recv_smem(const LowLatencyGeometry& g) {
  const std::size_t n = static_cast<std::size_t>(g.ranks) * g.local_experts;
  const std::size_t scans = g.ranks_per_node < g.ranks ? 2 : 1;  // across nodes: also by source
  return sizeof(uint64_t) * n + sizeof(int) * scans * (2 * n + 1);
}
// The dispatch_recv kernel instance for the rows' widest common word.
template <class Fn>
void visit_row_word(int64_t row_bytes, Fn&& fn) {
  if (row_bytes % 16 == 0) {
    fn(static_cast<uint4*>(nullptr));
  } else if (row_bytes % 4 == 0) {
    fn(static_cast<uint32_t*>(nullptr));
  } else {
    fn(static_cast<uint8_t*>(nullptr));
  }
}
// Blocks for `units` units of work, at most one wave of the GPU and the SM
// budget (the blocks loop).
unsigned wave_blocks(const LowLatencyGeometry& g, int64_t units) {
  const int64_t wave = static_cast<int64_t>(g.sm_count > 0 ? g.sm_count : 1) * detail::kBlocksPerSm;
  return budget_blocks(units < wave ? units : wave, g.sm_budget);
}
// `groups` tokens, each split over blocks so that they make about kRecvBlocks,
// at most `most` a group (the units a group splits into); within the SM budget,
// the blocks loop over groups.
dim3 recv_grid(const LowLatencyGeometry& g, int64_t groups, int64_t most) {
  const int64_t want = (detail::kRecvBlocks + groups - 1) / (groups > 0 ? groups : 1);
  const unsigned split = static_cast<unsigned>(want < 1 ? 1 : (want < most ? want : most));
  const GridShape grid = budget_grid({static_cast<unsigned>(groups), split}, g.sm_budget);
  return dim3(grid.x, grid.y);
}
}  // namespace

void low_latency_prepare(LowLatencyGeometry& g) {
  using namespace detail;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&g.sm_count, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  const int64_t dispatch_row = layout_of(g.dispatch_format, g.hidden).row_bytes;
  visit_dispatch_format(g.dispatch_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using Src = std::remove_pointer_t<decltype(type)>;
      const void* kernel = reinterpret_cast<const void*>(&dispatch_send_kernel<F, Src>);
      preload(kernel);
      allow_smem(kernel, dispatch_send_smem(g, dispatch_row), "a dispatch row");
    });
  });
  visit_row_word(dispatch_row, [&](auto* word) {
    using Word = std::remove_pointer_t<decltype(word)>;
    const void* kernel = reinterpret_cast<const void*>(&dispatch_recv_kernel<Word>);
    preload(kernel);
    allow_smem(kernel, dispatch_recv_smem(g), "the arrival words");
  });
  visit_format(g.combine_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using T = std::remove_pointer_t<decltype(type)>;
      preload(reinterpret_cast<const void*>(&combine_send_kernel<F, T>));
      preload(reinterpret_cast<const void*>(&combine_recv_kernel<F, T>));
    });
  });
}

void low_latency_dispatch_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* x,
                               const int32_t* topk_idx, const float* topk_weights, int num_tokens, bool reject,
                               void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  const Layout layout = layout_of(g.dispatch_format, g.hidden);
  const unsigned blocks = wave_blocks(g, num_tokens);  // a block per token
  const std::size_t smem = dispatch_send_smem(g, layout.row_bytes);
  visit_dispatch_format(g.dispatch_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using Src = std::remove_pointer_t<decltype(type)>;
      dispatch_send_kernel<F, Src><<<blocks, kBlockThreads, smem, s>>>(g, b, layout, static_cast<const Src*>(x),
                                                                        topk_idx, topk_weights, num_tokens, reject);
    });
  });
  check(cudaGetLastError(), "low-latency dispatch send kernel launch");
}

void low_latency_dispatch_recv(const LowLatencyGeometry& g, const LowLatencyBuffers& b, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  const int64_t row_bytes = layout_of(g.dispatch_format, g.hidden).row_bytes;
  visit_row_word(row_bytes, [&](auto* word) {
    using Word = std::remove_pointer_t<decltype(word)>;
    const int64_t parts = (row_bytes / static_cast<int64_t>(sizeof(Word)) + kRecvWarpWords - 1) / kRecvWarpWords;
    const int64_t warps_per_block = kBlockThreads / 32;
    const int64_t most = (low_latency_max_recv_rows(g) * parts + warps_per_block - 1) / warps_per_block;
    dispatch_recv_kernel<Word><<<wave_blocks(g, most), kBlockThreads, dispatch_recv_smem(g), s>>>(g, b, row_bytes);
  });
  check(cudaGetLastError(), "low-latency dispatch receive kernel launch");
}

void low_latency_combine_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* expert_out,
                              bool reject, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  const Layout layout = layout_of(g.combine_format, g.hidden);
  const unsigned blocks = wave_blocks(g, low_latency_max_recv_rows(g));  // a row at a time
  visit_format(g.combine_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using Src = std::remove_pointer_t<decltype(type)>;
      combine_send_kernel<F, Src><<<blocks, kBlockThreads, sizeof(int) * g.ranks, s>>>(
          g, b, layout, static_cast<const Src*>(expert_out), reject);
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
  const std::size_t smem = sizeof(uint64_t) * g.ranks + (sizeof(const uint8_t*) + sizeof(float)) * g.topk;
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
