// SPDX-License-Identifier: MIT
// epcomm — the low-latency exchange for decoding (a few tokens per rank per layer).
//
// Beside Exchange, tuned for small batches: there is no count exchange. Every
// (source rank, local expert) pair owns a fixed slot region of max_tokens_per_rank
// rows in the owner's receive buffer, so a sender computes every offset alone and
// writes each (token, expert) row straight into the owner's slot; the
// per-(source, expert) count is written last, behind a release fence, and the
// receiver waits on counts. Combine writes each expert output back into a slot
// per (token, k) on the token's source rank, which sums them in k order: results
// are deterministic run to run. See docs/low_latency.md.
//
// Operations are split so the caller computes between the halves:
//   dispatch_send -> (compute) -> dispatch_recv -> experts ->
//   combine_send  -> (compute) -> combine_recv
// One round is in flight per exchange: the next dispatch_send needs the previous
// round finished (dispatch_recv returned and, if combine_send was called,
// combine_recv returned). Every rank makes the same calls in the same order; two
// micro-batches use two exchanges.
//
// Memory: host memory inside a node (shared memory) and across nodes (a proxy
// that moves rows with MPI). MemorySpace::kDevice for the ranks of one node (GPU
// memory mapped by CUDA IPC): every call enqueues one kernel on the caller's
// stream and returns, the GPU waits for peers, and a round captures in a CUDA
// graph. Device memory across nodes is refused with kUnsupported.
//
// With device memory, what a kernel finds wrong (a peer silent for the group's
// timeout, bad input seen on the GPU) is reported by the next call on this rank:
// Error(kTimeout) naming the silent rank, Error(kInvalidArgument) naming the
// value or the rejecting rank; the exchange is then failed (kGroupFailed).
#pragma once

#include <epcomm/export.hpp>
#include <epcomm/group.hpp>
#include <epcomm/types.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace epcomm {

struct LowLatencyConfig {
  int num_experts = 0;          // divisible by the group size
  int topk = 0;                 // 1 .. num_experts
  int hidden = 0;               // elements per token row, any positive number
  int max_tokens_per_rank = 0;  // largest num_tokens a dispatch_send may pass, >= 1
  DType dtype = DType::kBF16;   // tokens, expert outputs, combined outputs
  // Rows on the wire and in the output: kBF16, kF32, kFP8 or kFP8UE8M0.
  Format dispatch_format = Format::kBF16;
  // Expert outputs on the wire: kBF16, kF32 or LogFMT-n.
  Format combine_format = Format::kBF16;
  MemorySpace memory = MemorySpace::kHost;
  int device = -1;
  // With kDevice: the most SMs each of the exchange's kernels occupies (it is
  // launched with at most this many blocks), as ExchangeConfig::gpu_sm_budget:
  // 0 = no bound; negative or more than the device's SMs is an
  // Error(kInvalidArgument) at construction; when 0, EPCOMM_GPU_SM_BUDGET sets
  // it. A receive kernel spins on its GPU until the peers' rows arrive: with two
  // micro-batches on two exchanges, budgets that leave SMs free keep one
  // micro-batch's waiting kernels from starving the other's sends.
  int gpu_sm_budget = 0;
};

// What an exchange of a config allocates per rank.
struct LowLatencyMemory {
  std::size_t shared_bytes = 0;   // receive buffers node peers write into
  std::size_t private_bytes = 0;  // output, staging for other nodes, landing
  std::size_t total() const { return shared_bytes + private_bytes; }
};

struct LowLatencyDispatchInput {
  const void* x = nullptr;              // [num_tokens, hidden] of config.dtype
  const int32_t* topk_idx = nullptr;    // [num_tokens, topk]; -1 = no expert
  const float* topk_weights = nullptr;  // [num_tokens, topk], finite; kept for combine
  int num_tokens = 0;                   // 0 .. max_tokens_per_rank
  // Device memory: the cudaStream_t the exchange's kernels go on (null: the
  // legacy default stream); ignored with host memory. Pass the same stream, or
  // streams the caller orders, to every call of a round.
  void* stream = nullptr;
};

// The received rows, the layout decode grouped GEMMs take: expert j's rows are
// rows + j * rows_per_expert * row_bytes, the first counts[j] of them real,
// ordered by source rank, then source token index. Valid until the next
// dispatch_recv of the exchange.
struct LowLatencyRecv {
  const void* rows = nullptr;       // [num_local_experts, rows_per_expert, row_bytes]
  Format format = Format::kBF16;    // row layout: row_layout(format, hidden)
  std::size_t row_bytes = 0;
  int num_local_experts = 0;
  int64_t rows_per_expert = 0;      // ranks * max_tokens_per_rank
  const int32_t* counts = nullptr;     // [num_local_experts]
  const int32_t* src_rank = nullptr;   // [num_local_experts, rows_per_expert]
  const int32_t* src_token = nullptr;  // [num_local_experts, rows_per_expert]
};

namespace detail {
class LowLatencyBackend;
}

class EPCOMM_API LowLatencyExchange {
 public:
  // Collective over the group: checks every rank passed the same config and
  // allocates memory_needed(...) bytes up front.
  LowLatencyExchange(const Group& group, const LowLatencyConfig& config);
  ~LowLatencyExchange();
  LowLatencyExchange(const LowLatencyExchange&) = delete;
  LowLatencyExchange& operator=(const LowLatencyExchange&) = delete;

  // The bytes an exchange of `config` allocates on each rank of a group of `ranks`
  // ranks in nodes of `ranks_per_node`. Throws Error(kInvalidArgument) for a bad
  // config.
  static LowLatencyMemory memory_needed(const LowLatencyConfig& config, int ranks, int ranks_per_node);

  const LowLatencyConfig& config() const;

  // Writes this rank's rows into every owner's slots (node peers) or hands them to
  // the proxy (other nodes), then returns. Bad input (more tokens than
  // max_tokens_per_rank, an expert id out of range or repeated in a token, a
  // non-finite weight, null pointers) throws Error(kInvalidArgument) naming the
  // value; every other rank's dispatch_recv then throws too, naming this rank,
  // and the exchange stays usable for the next round.
  void dispatch_send(const LowLatencyDispatchInput& input);
  // Waits until every rank's counts arrived (a rank silent for the group's
  // timeout: Error(kTimeout) naming it; the exchange is then failed) and lays the
  // rows out per expert. Device memory: enqueues the wait and the layout on
  // `stream` (see LowLatencyDispatchInput::stream) and returns at once; the
  // returned pointers are GPU memory, ready for the stream's next kernel.
  LowLatencyRecv dispatch_recv(void* stream = nullptr);

  // expert_out: [num_local_experts, rows_per_expert, hidden] of config.dtype, the
  // layout of dispatch_recv's rows (rows past counts[j] are not read). Writes
  // every row back to its source's (token, k) slot. A value the combine format
  // cannot encode (LogFMT: NaN, infinity) throws Error(kInvalidArgument) here and
  // in the sources' combine_recv.
  void combine_send(const void* expert_out, void* stream = nullptr);
  // Waits for every rank's rows, then out[t] = sum over k in order 0..topk-1 of
  // topk_weights[t][k] * row(t, k), in FP32, rounded once to config.dtype.
  // out: [num_tokens of the dispatch, hidden] of config.dtype. Device memory:
  // enqueued on `stream`, out ready for the stream's next kernel.
  void combine_recv(void* out, void* stream = nullptr);

  // Moves what arrived from other nodes without blocking; true if anything moved.
  bool progress();

 private:
  std::shared_ptr<detail::LowLatencyBackend> engine_;
};

}  // namespace epcomm
