// SPDX-License-Identifier: MIT
// epcomm — dispatch and combine.
//
// Dispatch sends every token to the ranks that own its chosen experts. A token
// crosses the inter-node transport at most once per destination node (to the rank
// with the same local index there), which forwards it through shared memory to the
// local owners; each rank receives each token at most once and lays it out grouped
// by local expert. Combine is the reverse: each node first weight-reduces the rows
// of a token, one partial sum per (token, node) crosses back, and the source adds
// the node partials. See docs/design.md.
//
// Every operation is split into begin (returns a handle at once) and wait; the
// blocking call is begin + wait. Up to ExchangeConfig::max_inflight dispatch
// handles may be alive at once (each owns one set of pre-allocated buffers), so two
// micro-batches can be in flight. All ranks of the group must begin the same
// operations in the same order.
#pragma once

#include <epcomm/export.hpp>
#include <epcomm/group.hpp>
#include <epcomm/types.hpp>

#include <cstdint>
#include <memory>

namespace epcomm {

struct ExchangeConfig {
  int num_experts = 0;               // divisible by the group size
  int topk = 0;                      // 1 .. num_experts
  int hidden = 0;                    // elements per token row
  int max_tokens_per_rank = 0;       // largest num_tokens any dispatch will pass
  DType dtype = DType::kBF16;        // tokens, expert outputs, combined outputs
  Format dispatch_format = Format::kBF16;  // rows on the wire and in rows()
  Format combine_format = Format::kBF16;   // partial sums between ranks (owner, node)
  int expert_alignment = 1;          // pad each expert's segment to a multiple
  int64_t max_recv_rows = 0;         // rows a rank may receive; 0: worst case
  int max_inflight = 2;              // dispatch handles alive at once
  // CRC32C over every block that crosses a node boundary (MPI or verbs) and every
  // row that crosses a node peer's memory (shared host memory, or GPU memory with
  // kDevice, where kernels take and check it), checked by the reader; a mismatch
  // fails the group (ErrorCode::kDataCorrupted) naming the writer, the block or
  // row and the operation, raised by the operation's wait() (so with kDevice do
  // not trust results a stream read before wait() returned). Also turned on by
  // EPCOMM_CHECKSUM=1.
  bool checksum = false;
  // Where every array the exchange reads or returns lives: inputs (x, topk_idx,
  // topk_weights), rows() and the row metadata, expert_out_buffer(), combine's
  // expert_out and out. kDevice: CUDA memory of `device`, allocated once here;
  // the node's GPUs write into each other's receive buffers (CUDA IPC, NVLink);
  // begin calls order their work after the caller's stream and make that stream
  // wait for the result (see DispatchInput::stream). Same on every rank.
  MemorySpace memory = MemorySpace::kHost;
  int device = -1;  // with kDevice: CUDA device ordinal; -1 = the current device
  // With kDevice: the most SMs any kernel of the exchange occupies, leaving the
  // rest to the caller's other work (the other micro-batch's compute: DeepSeek-V3
  // gives communication 20 of an H800's 132). 0 = no bound; a kernel then takes
  // as many blocks as its rows want. Each kernel is launched with at most this
  // many blocks, a block on one SM; two operations in flight at once (two slots,
  // max_inflight) may run kernels side by side, each within the budget. The
  // copies and memsets the exchange enqueues are the driver's, outside it.
  // Checked at construction: negative, or more than the device's SMs, is an
  // Error(kInvalidArgument) naming the value (use 0 for the whole GPU). When 0,
  // EPCOMM_GPU_SM_BUDGET sets it. Same on every rank; ignored with host memory.
  int gpu_sm_budget = 0;
};

// Bytes one operation moved, counted by epcomm as it posts them.
struct ExchangeStats {
  int64_t internode_bytes = 0;   // payload + routing metadata over the network tier
  int64_t intranode_bytes = 0;   // bytes written to / read from other ranks' memory
  int64_t layout_bytes = 0;      // count exchange (all peers) before the payload
};

struct DispatchInput {
  // [num_tokens, hidden] of config.dtype; with x_encoded, [num_tokens] rows already
  // in config.dispatch_format (row_layout(dispatch_format, hidden).row_bytes each:
  // e.g. FP8 codes and scales from the caller's own quantiser), sent as they are.
  const void* x = nullptr;
  const int32_t* topk_idx = nullptr;     // [num_tokens, topk]; -1 = no expert
  const float* topk_weights = nullptr;   // [num_tokens, topk]
  int num_tokens = 0;
  bool x_encoded = false;
  MemorySpace memory = MemorySpace::kHost;  // must be ExchangeConfig::memory
  // With device memory: a cudaStream_t (null: the legacy default stream).
  // dispatch_begin waits for the work enqueued on it so far (the inputs), brings
  // the routing's counts to the host for the layout (on one node the GPU checks
  // topk_idx / topk_weights and counts them, and only the counts, a few KB, are
  // copied; across nodes topk_idx and topk_weights are copied): the one host
  // synchronisation, none with a reused layout on one node (see
  // dispatch_begin(input, layout)); then enqueues on it a wait for the dispatch's end:
  // the caller's next kernel on this stream reads finished rows with no host
  // synchronisation; wait() and done() still work from the host. The exchange's
  // kernels read x, topk_idx and topk_weights until the dispatch completes: leave
  // them unchanged until then (work queued on this stream after begin runs after).
  void* stream = nullptr;
};

// Options of one combine.
struct CombineOptions {
  // true: out[t] = sum over the token's rows of weight * expert output. false: every
  // weight is 1, so out[t] is the plain sum of the token's rows — the backward of
  // dispatch, where the gradients of a token's copies add up.
  bool weighted = true;
  // With device memory: a cudaStream_t (null: the legacy default stream). The
  // combine reads expert_out once the work enqueued on it so far is done, and the
  // stream's next work sees `out`, as DispatchInput::stream orders a dispatch.
  void* stream = nullptr;
};

namespace detail {
struct DispatchOp;
struct CombineOp;
class Engine;
struct ReusableLayout;
}  // namespace detail

// The receive layout of a finished dispatch (DispatchHandle::layout()), kept for
// later dispatches of the same Exchange whose routing gives the same counts: how
// many of each rank's tokens go to each expert, to each rank and to each node —
// for example the same topk_idx, when routing is cached across layers or reused
// by a backward pass. A dispatch given it skips the layout exchange (every rank
// sending every rank its counts, and waiting for all of them) and places its rows
// by its own topk_idx in that layout. Cheap to copy; holds no exchange slot, so it
// may outlive its handle.
class EPCOMM_API DispatchLayout {
 public:
  DispatchLayout();
  ~DispatchLayout();
  DispatchLayout(const DispatchLayout&);
  DispatchLayout& operator=(const DispatchLayout&);

  bool valid() const { return state_ != nullptr; }

 private:
  friend class DispatchHandle;
  friend class Exchange;
  explicit DispatchLayout(std::shared_ptr<const detail::ReusableLayout> state);
  std::shared_ptr<const detail::ReusableLayout> state_;
};

// The result and route of one dispatch. Move-only; holds its buffers (and one of
// the exchange's in-flight slots) until destroyed. The buffer addresses (rows(),
// row_weights(), row_src_rank(), row_src_token(), expert_out_buffer()) are fixed
// from dispatch_begin on, their contents valid once wait() returned or, with
// device memory, for work the caller enqueues on its stream after dispatch_begin;
// the other accessors are valid once wait() returned.
class EPCOMM_API DispatchHandle {
 public:
  DispatchHandle();
  ~DispatchHandle();
  DispatchHandle(DispatchHandle&&) noexcept;
  DispatchHandle& operator=(DispatchHandle&&) noexcept;

  bool valid() const { return op_ != nullptr; }
  bool done() const;
  void wait();  // drives progress; throws on error or timeout

  // Received rows, expert-major: expert j's rows are [expert_offset(j),
  // expert_offset(j) + expert_count(j)); within an expert ordered by source epcomm
  // rank, then source token index. Segments are padded to expert_alignment with
  // rows whose source is -1 and weight 0 (their payload bytes are unspecified).
  // Rows are in config.dispatch_format (layout: row_layout(row_format(), hidden)),
  // so FP8 rows can go to an FP8 grouped GEMM with their scales as they are.
  const void* rows() const;
  Format row_format() const;
  std::size_t row_bytes() const;
  // Decodes every real row into out ([num_rows(), hidden] of dtype, in the
  // exchange's memory space); padding rows are left untouched.
  void decode_rows(void* out, DType dtype) const;
  int64_t num_rows() const;              // including padding
  int num_local_experts() const;
  int64_t expert_count(int local_expert) const;   // real rows, without padding
  int64_t expert_offset(int local_expert) const;  // first row of the segment
  const float* row_weights() const;      // gating weight of each row for its expert
  const int32_t* row_src_rank() const;   // source epcomm rank, -1 for padding
  const int32_t* row_src_token() const;  // token index on the source rank
  int num_tokens() const;                // tokens this rank passed to dispatch
  // Shared memory for the expert outputs, laid out like rows() but of
  // config.dtype: an expert kernel that writes its outputs here and passes this
  // pointer to combine saves combine one copy. Valid while the handle lives.
  void* expert_out_buffer() const;
  ExchangeStats stats() const;
  // This dispatch's layout, for dispatches that reuse it (see DispatchLayout); a
  // dispatch that reused a layout returns that layout.
  DispatchLayout layout() const;

 private:
  friend class Exchange;
  explicit DispatchHandle(std::shared_ptr<detail::DispatchOp> op);
  std::shared_ptr<detail::DispatchOp> op_;
};

class EPCOMM_API CombineHandle {
 public:
  CombineHandle();
  ~CombineHandle();
  CombineHandle(CombineHandle&&) noexcept;
  CombineHandle& operator=(CombineHandle&&) noexcept;

  bool valid() const { return op_ != nullptr; }
  bool done() const;
  void wait();
  ExchangeStats stats() const;

 private:
  friend class Exchange;
  explicit CombineHandle(std::shared_ptr<detail::CombineOp> op);
  std::shared_ptr<detail::CombineOp> op_;
};

class EPCOMM_API Exchange {
 public:
  // Collective over the group: checks that every rank passed the same config and
  // allocates all buffers for max_inflight operations up front.
  Exchange(const Group& group, const ExchangeConfig& config);
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  const ExchangeConfig& config() const;
  // The inter-node transport this exchange chose: "mpi" or "verbs" (see
  // GroupOptions::transport).
  const char* transport() const;

  DispatchHandle dispatch_begin(const DispatchInput& input);
  DispatchHandle dispatch(const DispatchInput& input);  // begin + wait

  // Dispatches new rows x along the route of an earlier dispatch of this exchange,
  // whose handle `route` is still alive: input.topk_idx and input.topk_weights must
  // hold the values that dispatch was given (they are not validated again and the
  // routing work is skipped), input.num_tokens must equal its num_tokens. Rows land
  // where that dispatch put them. This is the backward of combine: the output
  // gradient goes to the expert rows the outputs came from. It takes a slot of its
  // own (max_inflight counts it).
  DispatchHandle dispatch_begin(const DispatchInput& input, const DispatchHandle& route);
  DispatchHandle dispatch(const DispatchInput& input, const DispatchHandle& route);

  // Dispatches `input` into a layout an earlier dispatch of this exchange made,
  // without the layout exchange. Every rank must pass the layout of the same
  // dispatch: a rank that passes another one, or none, fails every rank with
  // kMismatch naming both ranks (at the latest in the next call: the operation
  // headers are compared as they arrive, docs/design.md). Each rank checks that its
  // input.topk_idx gives the counts the layout was made from; if not, the begin is
  // rejected with kInvalidArgument naming the first count that differs — on every
  // rank that differs, and like any begin rejected on some ranks only, it fails the
  // group on the others (docs/design.md, Errors). With device memory on one node,
  // for a dispatch format that encodes every row (or none) before routing, the GPU
  // makes that check (and the routing's) while the dispatch runs, without a copy to
  // the host: a difference or a bad pick then fails the dispatch at wait() with the
  // same kInvalidArgument message, and the group with it (docs/gpu.md).
  DispatchHandle dispatch_begin(const DispatchInput& input, const DispatchLayout& layout);
  DispatchHandle dispatch(const DispatchInput& input, const DispatchLayout& layout);

  // expert_out: [expert_out_rows, hidden] of config.dtype, in the row layout of
  // `route` (padding rows are ignored). out: [out_tokens, hidden] of config.dtype
  // receives, for each token the source passed to dispatch, the sum over its
  // experts of weight * expert output (0 for tokens routed nowhere); see
  // CombineOptions for the unweighted sum and, with device memory, the stream.
  CombineHandle combine_begin(const DispatchHandle& route, const void* expert_out,
                              int64_t expert_out_rows, void* out, int out_tokens,
                              const CombineOptions& options = {});
  void combine(const DispatchHandle& route, const void* expert_out,
               int64_t expert_out_rows, void* out, int out_tokens,
               const CombineOptions& options = {});

  // Advances every in-flight operation without blocking; true if any moved.
  bool progress();

 private:
  std::shared_ptr<detail::Engine> engine_;
};

}  // namespace epcomm
