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
__device__ inline int row_chunks(int hidden) {
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

// The lane's part of a row: encoded, or copied element by element.
template <class F, class Src>
__device__ inline void put_lane(const Src* src, const Lane& l, const Layout& layout, uint8_t* row, int64_t pos,
                                int hidden, unsigned long long* bad) {
  if constexpr (IsCopy<F, Src>::value) {
    Src* dst = reinterpret_cast<Src*>(row) + l.col0;
    const Src* from = src + l.col0;
    constexpr int kVectors = kElemsPerLane * sizeof(Src) / sizeof(uint4);
    if (l.valid == kElemsPerLane && reinterpret_cast<uintptr_t>(dst) % sizeof(uint4) == 0 &&
        reinterpret_cast<uintptr_t>(from) % sizeof(uint4) == 0) {
      // Whole 16-byte stores: rows often go to a peer GPU, where narrow stores cost.
#pragma unroll
      for (int i = 0; i < kVectors; ++i) reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(from)[i];
      return;
    }
    for (int i = 0; i < l.valid; ++i) dst[i] = from[i];
  } else {
    Elems v;
    load8(src + l.col0, l.valid, v);
    F::encode(v, l, layout, row, pos, hidden, bad);
  }
}

// The block copies `bytes` from shared memory to dst with the widest access both
// allow (slot regions start 256-byte aligned, rows are row_bytes apart).
__device__ inline void copy_row(uint8_t* dst, const uint8_t* src, int64_t bytes) {
  if (bytes % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
    for (int64_t i = threadIdx.x; i < bytes / 16; i += blockDim.x) {
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
    }
  } else if (bytes % 4 == 0 && reinterpret_cast<uintptr_t>(dst) % 4 == 0) {
    for (int64_t i = threadIdx.x; i < bytes / 4; i += blockDim.x) {
      reinterpret_cast<uint32_t*>(dst)[i] = reinterpret_cast<const uint32_t*>(src)[i];
    }
  } else {
    for (int64_t i = threadIdx.x; i < bytes; i += blockDim.x) dst[i] = src[i];
  }
}

// Counts this block done; true in the last block of the grid to finish, which
// then sees every other block's stores (they fenced before counting).
__device__ inline bool last_block(unsigned int* done) {
  __shared__ bool last;
  __threadfence_system();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(done, 1u) == gridDim.x - 1;
  __syncthreads();
  if (last) __threadfence_system();
  return last;
}

// Shared memory of the dispatch kernel: the encoded row, then per k the expert
// and the number of earlier tokens that chose it.
inline int64_t dispatch_smem_bytes(const G& g, int64_t row_bytes) {
  return (row_bytes + 15) / 16 * 16 + 2 * static_cast<int64_t>(sizeof(int)) * g.topk;
}

// Block t: token t. The slot of (t, k) is the number of earlier tokens that chose
// its expert; the row is encoded once into shared memory and copied to each owner.
template <class F, class Src>
__global__ void __launch_bounds__(kBlockThreads)
    dispatch_send_kernel(G g, B b, Layout layout, const Src* x, const int32_t* idx, const float* w, int num_tokens,
                         bool reject) {
  extern __shared__ uint4 smem[];
  LowLatencyControl* const c = b.control;
  if (load_volatile(&c->failed)) return;  // the same in every block: set by an earlier kernel only
  const uint64_t round = c->round + 1;    // the last block stores it, after every block read it
  const int K = g.topk, J = g.local_experts, E = J * g.ranks, t = blockIdx.x;
  auto* row = reinterpret_cast<uint8_t*>(smem);
  int* expert = reinterpret_cast<int*>(row + (layout.row_bytes + 15) / 16 * 16);
  int* earlier = expert + K;
  if (t < num_tokens) {
    const int32_t* my_idx = idx + static_cast<int64_t>(t) * K;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
      const int e = my_idx[k];
      const float wk = w[static_cast<int64_t>(t) * K + k];
      bool bad = e < -1 || e >= E || (e != -1 && !elem::is_finite(wk));
      for (int k2 = 0; k2 < k && !bad; ++k2) bad = e != -1 && my_idx[k2] == e;
      if (bad) atomicMin(&c->bad_input, t * K + k);
      expert[k] = bad || e < 0 ? -1 : e;
      earlier[k] = 0;
      b.weights[static_cast<int64_t>(t) * K + k] = wk;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < t * K; i += blockDim.x) {
      const int e = idx[i];
      for (int k = 0; k < K; ++k) {
        if (expert[k] >= 0 && expert[k] == e) atomicAdd(&earlier[k], 1);
      }
    }
    for (int chunk = 0; chunk < row_chunks(g.hidden); ++chunk) {
      const Lane l = row_lane(t, chunk, g.hidden);
      if (l.in_range) put_lane<F>(x + static_cast<int64_t>(t) * g.hidden, l, layout, row, t, g.hidden, nullptr);
    }
    __syncthreads();
    for (int k = 0; k < K; ++k) {
      // A token that repeats an expert (a rejected round) can push a later
      // token's count past the region: such a row is not written.
      const int e = earlier[k] < g.max_tokens ? expert[k] : -1;
      if (threadIdx.x == 0) {
        b.slot[static_cast<int64_t>(t) * K + k] = e < 0 ? -1 : earlier[k];
        if (e >= 0) atomicAdd(&b.counts[e], 1);
      }
      if (e < 0) continue;
      const int r = e / J, j = e % J;
      uint8_t* base = b.shared[r];
      const int64_t at = slot_index(g, j, g.rank, earlier[k]);
      copy_row(base + g.rows[round & 1] + at * layout.row_bytes, row, layout.row_bytes);
      if (threadIdx.x == 0) {
        int32_t* meta = reinterpret_cast<int32_t*>(base + g.meta[round & 1]) + 2 * at;
        meta[0] = t;
        meta[1] = k;
      }
    }
  }
  if (!last_block(&c->dispatch_blocks_done)) return;
  // The last block: every row of the round is stored; publish, then reset.
  const int bad_at = load_volatile(&c->bad_input);
  const bool rejected = reject || bad_at != INT_MAX;
  for (int r = threadIdx.x; r < g.ranks; r += blockDim.x) {
    int sum = 0;
    for (int j = 0; j < J; ++j) sum += load_volatile(&b.counts[r * J + j]);
    b.sent_to[r] = sum;
  }
  for (int wi = threadIdx.x; wi < E; wi += blockDim.x) {
    const int r = wi / J, j = wi % J;
    const uint32_t n = rejected ? 0u : static_cast<uint32_t>(load_volatile(&b.counts[wi]));
    store_release(reinterpret_cast<uint64_t*>(b.shared[r] + g.counts[round & 1]) + static_cast<int64_t>(g.rank) * J + j,
                  wire::pack_word(round, rejected, n));
  }
  __syncthreads();
  for (int wi = threadIdx.x; wi < E; wi += blockDim.x) b.counts[wi] = 0;
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

// Block j: waits for expert j's word from every source, then copies its slot
// regions source by source into the output rows (a warp per row).
__global__ void __launch_bounds__(kBlockThreads) dispatch_recv_kernel(G g, B b, int64_t row_bytes) {
  extern __shared__ uint64_t words[];  // [ranks], then first[ranks + 1]
  LowLatencyControl* const c = b.control;
  if (load_volatile(&c->failed)) return;
  const uint64_t round = c->round;
  const int j = blockIdx.x, P = g.ranks, J = g.local_experts;
  const uint8_t* mine = b.own_shared;
  const auto* all = reinterpret_cast<const uint64_t*>(mine + g.counts[round & 1]) + j;
  if (!wait_words(g, b, all, J, round, 0, words)) return;
  int* first = reinterpret_cast<int*>(words + P);
  __shared__ int base;
  if (threadIdx.x == 0) {
    int acc = 0;
    for (int s = 0; s < P; ++s) {
      first[s] = acc;
      acc += static_cast<int>(wire::word_count(words[s]));
    }
    first[P] = acc;
    b.out_counts[j] = acc;
    base = atomicAdd(&c->recv_rows, acc);
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
      b.recv_list[base + q] = static_cast<int32_t>(to);
    }
  }
}

// Block q: received row recv_list[q], encoded straight into its source's (token,
// k) slot; the last block publishes one word per source.
template <class F, class Src>
__global__ void __launch_bounds__(kBlockThreads)
    combine_send_kernel(G g, B b, Layout layout, const Src* y, bool reject) {
  LowLatencyControl* const c = b.control;
  if (load_volatile(&c->failed)) return;
  const uint64_t round = c->round;
  const int q = blockIdx.x;
  if (!reject && q < c->recv_rows) {
    const int64_t row = b.recv_list[q];
    const int s = b.out_src_rank[row];
    const int64_t at = static_cast<int64_t>(b.out_src_token[row]) * g.topk + b.out_k[row];
    uint8_t* dst = b.shared[s] + g.combine_rows + at * layout.row_bytes;
    for (int chunk = 0; chunk < row_chunks(g.hidden); ++chunk) {
      const Lane l = row_lane(row, chunk, g.hidden);
      if (l.in_range) put_lane<F>(y + row * g.hidden, l, layout, dst, row, g.hidden, &c->bad_output);
    }
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

// Block t: waits for every owner's word (each block, so none reads early), checks
// the row counts, then sums token t's rows in k order with the CPU's arithmetic.
template <class F, class Dst>
__global__ void __launch_bounds__(kBlockThreads)
    combine_recv_kernel(G g, B b, Layout layout, int num_tokens, Dst* out) {
  extern __shared__ uint64_t words[];  // [ranks]
  LowLatencyControl* const c = b.control;
  if (load_volatile(&c->failed)) return;
  const uint64_t round = c->round;
  const uint8_t* rows = b.own_shared + g.combine_rows;
  if (!wait_words(g, b, reinterpret_cast<const uint64_t*>(b.own_shared + g.combine_flags), 1, round, 1, words)) {
    return;
  }
  if (threadIdx.x == 0) {
    for (int o = 0; o < g.ranks; ++o) {
      const int32_t n = static_cast<int32_t>(wire::word_count(words[o]));
      if (n != b.sent_to[o]) {
        report(b, {D::kMismatch, o, b.sent_to[o], 0, n, 0.0f, static_cast<uint32_t>(round), 1});
        break;
      }
    }
  }
  const int t = blockIdx.x;
  if (t >= num_tokens) return;
  for (int chunk = 0; chunk < row_chunks(g.hidden); ++chunk) {
    const Lane l = row_lane(t, chunk, g.hidden);
    if (!l.in_range) continue;
    Elems a;
#pragma unroll
    for (int i = 0; i < kElemsPerLane; ++i) a[i] = 0.0f;
    for (int k = 0; k < g.topk; ++k) {
      const int64_t at = static_cast<int64_t>(t) * g.topk + k;
      if (b.slot[at] < 0) continue;
      Elems v;
      F::decode(rows + at * layout.row_bytes, l, layout, v);
      const float wk = b.weights[at];
#pragma unroll
      for (int i = 0; i < kElemsPerLane; ++i) a[i] = x86::add(a[i], x86::mul(wk, v[i]));
    }
    store8(out + static_cast<int64_t>(t) * g.hidden + l.col0, l.valid, a);
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
  const int64_t smem = dispatch_smem_bytes(g, layout_of(g.dispatch_format, g.hidden).row_bytes);
  int device = 0, limit = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute");
  if (smem > limit) {
    throw Error(ErrorCode::kUnsupported, "epcomm: a low-latency dispatch row of hidden " + std::to_string(g.hidden) +
                                             " in " + to_string(g.dispatch_format) + " takes " + std::to_string(smem) +
                                             " bytes of shared memory with topk, more than the " +
                                             std::to_string(limit) + " a block of device " + std::to_string(device) +
                                             " may have; use a narrower dispatch format");
  }
  visit_dispatch_format(g.dispatch_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using Src = std::remove_pointer_t<decltype(type)>;
      const void* k = reinterpret_cast<const void*>(&dispatch_send_kernel<F, Src>);
      preload(k);
      check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
            "cudaFuncSetAttribute (low-latency dispatch shared memory)");
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

void low_latency_dispatch_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* x,
                               const int32_t* topk_idx, const float* topk_weights, int num_tokens, bool reject,
                               void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  const Layout layout = layout_of(g.dispatch_format, g.hidden);
  const unsigned blocks = num_tokens > 0 ? static_cast<unsigned>(num_tokens) : 1u;
  const auto smem = static_cast<std::size_t>(dispatch_smem_bytes(g, layout.row_bytes));
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
  const std::size_t smem = sizeof(uint64_t) * g.ranks + sizeof(int) * (g.ranks + 1);
  dispatch_recv_kernel<<<g.local_experts, kBlockThreads, smem, s>>>(g, b, row_bytes);
  check(cudaGetLastError(), "low-latency dispatch receive kernel launch");
}

void low_latency_combine_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* expert_out,
                              bool reject, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  const Layout layout = layout_of(g.combine_format, g.hidden);
  const auto blocks = static_cast<unsigned>(low_latency_max_recv_rows(g));
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
  const unsigned blocks = num_tokens > 0 ? static_cast<unsigned>(num_tokens) : 1u;
  const std::size_t smem = sizeof(uint64_t) * g.ranks;
  visit_format(g.combine_format, [&](auto fmt) {
    using F = decltype(fmt);
    visit_dtype(g.dtype, [&](auto* type) {
      using Dst = std::remove_pointer_t<decltype(type)>;
      combine_recv_kernel<F, Dst><<<blocks, kBlockThreads, smem, s>>>(g, b, layout, num_tokens,
                                                                       static_cast<Dst*>(out));
    });
  });
  check(cudaGetLastError(), "low-latency combine receive kernel launch");
}

}  // namespace epcomm::kernels::cuda
