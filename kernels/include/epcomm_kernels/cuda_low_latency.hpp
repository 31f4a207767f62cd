// SPDX-License-Identifier: MIT
// The low-latency exchange's device path (docs/low_latency.md) for the ranks of
// one node: kernels that write rows into node peers' receive buffers (GPU memory
// mapped by CUDA IPC), publish arrival words behind a system-scope fence, wait on
// arrival words with a bounded spin, and combine in the host engine's order.
//
// Every call enqueues exactly one kernel on `stream` (a cudaStream_t as void*)
// and returns: no host synchronisation, no host-side round number. The round
// lives in LowLatencyControl (device memory), advanced by the dispatch kernel, so
// a dispatch + combine captured in a CUDA graph replays correctly. A send kernel
// finishes once its rows and words are written: between a send and its receive
// the exchange holds no SM. Like cuda_codec.hpp, no CUDA type appears here.
#pragma once

#include <epcomm/formats.hpp>
#include <epcomm/types.hpp>

#include <cstddef>
#include <cstdint>

namespace epcomm::kernels::cuda {

// The exchange's shape and the byte offsets inside every rank's shared region, as
// the host engine lays them out (runtime/src/low_latency/buffer_layout). Rank r
// of this node: its region is shared[r]. Rank r on another node: the kernels
// write its messages into pinned host staging (low_latency_wire.hpp's device
// messages) and push a command for the proxy, which sends them and, on r's
// side, copies them into r's region (or, for combine rows, its remote landing)
// and then the arrival words, so the receive kernels wait on the same words.
struct LowLatencyGeometry {
  int ranks = 0;
  int rank = 0;
  int ranks_per_node = 0;  // ranks / ranks_per_node nodes; ranks on other nodes go through the proxy
  int local_experts = 0;
  int max_tokens = 0;
  int topk = 0;
  int hidden = 0;
  DType dtype = DType::kBF16;
  Format dispatch_format = Format::kBF16;
  Format combine_format = Format::kBF16;
  int64_t counts[2] = {};  // by the round's parity
  int64_t meta[2] = {};
  int64_t rows[2] = {};
  int64_t combine_flags = 0;
  int64_t combine_rows = 0;
  uint64_t timeout_ns = 0;  // how long a wait spins before it names the silent rank
  // Blocks a kernel takes at most, so SMs it occupies at most (sm_budget.hpp); 0:
  // no bound. The kernels loop over their experts, tokens and rows, so any grid
  // computes the same rows; no block waits for another of its grid.
  int sm_budget = 0;
  int sm_count = 0;         // the device's multiprocessors: low_latency_prepare sets it
  // Across nodes (remote ranks: the ranks of other nodes, in rank order).
  int64_t dispatch_message = 0;   // bytes of a dispatch staging message (device_dispatch_message_bytes)
  int64_t combine_message = 0;    // bytes of a combine staging message
  int64_t max_rows_to_rank = 0;   // rows of a combine message at most
  uint32_t ring_capacity = 0;     // commands of each kind's ring, a power of two
};

// Whether rank r is on another node than g.rank (then its rows go through the
// proxy), and its index among the remote ranks.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline bool low_latency_remote(const LowLatencyGeometry& g, int r) {
  return r / g.ranks_per_node != g.rank / g.ranks_per_node;
}
#if defined(__CUDACC__)
__host__ __device__
#endif
inline int low_latency_remote_index(const LowLatencyGeometry& g, int r) {
  const int first_local = g.rank / g.ranks_per_node * g.ranks_per_node;
  return r < first_local ? r : r - g.ranks_per_node;
}

// What a kernel found wrong, written to pinned host memory for the host to
// report at its next call: the fields first, `code` last (behind a system fence).
struct LowLatencyDiagnosis {
  enum Code : int32_t {
    kNone = 0,
    kBadInput = 1,   // this rank's dispatch input: (token, k), expert, weight
    kTimeout = 2,    // rank: the first rank whose word did not come
    kRejected = 3,   // rank: the first rank that rejected the round
    kBadOutput = 4,  // this rank's expert_out: token = local expert, k = row, expert = column
    kMismatch = 5,   // rank returned `expert` combine rows, this rank sent it `token`
    kProxyStalled = 6,  // the proxy took no command for the timeout (ring full); op: the ring's kind
  };
  int32_t code;
  int32_t rank;
  int32_t token;
  int32_t k;
  int32_t expert;
  float weight;
  uint32_t round;  // the round (low 32 bits) the kernel worked on
  uint32_t op;     // 0 dispatch, 1 combine
};

// Device-memory words the kernels keep between launches. Initial state:
// low_latency_initial_control().
struct LowLatencyControl {
  unsigned long long round;        // the last round a dispatch_send started
  unsigned long long bad_output;   // smallest row * hidden + column combine_format cannot encode, else ~0
  unsigned int dispatch_blocks_done;
  unsigned int combine_blocks_done;
  int recv_rows;  // rows dispatch_recv laid out this round (recv_list's length)
  int bad_input;  // smallest token * topk + k of a bad dispatch entry, else INT_MAX
  int failed;     // set once by the first diagnosis: every later kernel does nothing
  int pad;
  unsigned long long ring_head[2];  // commands pushed into each kind's ring (its head, kept on the GPU)
};
LowLatencyControl low_latency_initial_control();

// Buffers, all reachable by this GPU.
struct LowLatencyBuffers {
  uint8_t* const* shared = nullptr;  // device array [ranks]: the node's regions (own included)
  uint8_t* own_shared = nullptr;     // this rank's region (= shared[rank])
  LowLatencyDiagnosis* diagnosis = nullptr;  // pinned, mapped
  LowLatencyControl* control = nullptr;      // device
  // Device scratch, zeroed at construction and returned to zero by the kernels.
  int32_t* slot = nullptr;       // [max_tokens * topk]: slot of (t, k), -1 for none
  float* weights = nullptr;      // [max_tokens * topk]: the dispatch's weights, for combine
  int32_t* counts = nullptr;     // [ranks * local_experts]: rows to (owner, local expert)
  int32_t* sent_to = nullptr;    // [ranks]: rows this rank sent each owner this round
  int32_t* rows_to = nullptr;    // [ranks]: combine rows to each source
  int32_t* recv_list = nullptr;  // [max_recv_rows]: output row of each received row
  // Across nodes only (null within a node):
  uint8_t* staging = nullptr;         // pinned, mapped: [remote][parity] dispatch, then [remote][parity] combine messages
  uint8_t* ring[2] = {};              // pinned, mapped: each kind's command ring (low_latency_wire.hpp)
  uint8_t* remote_landing = nullptr;  // device: [remote][max_rows_to_rank] combine rows the proxy copied in
  int32_t* sent_prefix = nullptr;     // [ranks * local_experts + 1]: rows sent to experts before e (dispatch)
  int32_t* remote_row = nullptr;      // [max_tokens * topk]: combine row of (t, k) in remote_landing, else -1
  int32_t* stage_pos = nullptr;       // [max_recv_rows]: received row's place in its source's combine message
  // The output and its indices: [J, ranks * max_tokens] rows, counts [J].
  uint8_t* out_rows = nullptr;
  int32_t* out_counts = nullptr;
  int32_t* out_src_rank = nullptr;
  int32_t* out_src_token = nullptr;
  int32_t* out_k = nullptr;
};

// Most rows one rank receives in a round: every source token sends it at most
// min(topk, local_experts) rows.
inline int64_t low_latency_max_recv_rows(const LowLatencyGeometry& g) {
  return int64_t{g.ranks} * g.max_tokens * (g.topk < g.local_experts ? g.topk : g.local_experts);
}

// Loads the kernels of g's formats now (CUDA loads lazily at the first launch,
// which can wait for running kernels, as the ones spinning on arrival words),
// grants them the shared memory g needs (or throws kInvalidArgument when the
// current device has too little: a dispatch row must fit in a block's shared
// memory, 227 KB on an H100 or H200) and sets g.sm_count.
void low_latency_prepare(LowLatencyGeometry& g);

// One kernel, a block per token (one wave; the blocks loop past it): encodes the
// token's row once, checks its entries (the host's send_plan rules), finds each
// one's slot, writes the slot's (token, k) into the owner and the encoded row
// once into each owner rank's token row for this source (not once per k); the
// last block to finish publishes every (owner, local expert) arrival word. num_tokens in [0, max_tokens] (checked by
// the host).
// reject: the host refused this rank's input (and threw): only the words go out,
// marked rejected, so peers fail the round instead of waiting for it.
void low_latency_dispatch_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* x,
                               const int32_t* topk_idx, const float* topk_weights, int num_tokens, bool reject,
                               void* stream);
// One kernel, one wave of blocks (at most the SM budget's): each waits for every
// (source, local expert) word of the round (g.timeout_ns), then together they
// lay every expert's rows out in source order, each slot's row copied from its
// source's token row.
void low_latency_dispatch_recv(const LowLatencyGeometry& g, const LowLatencyBuffers& b, void* stream);
// One kernel, one wave of blocks looping over the received rows: encodes
// expert_out's row ([J, ranks * max_tokens, hidden] of g.dtype) into its source's
// (token, k) slot; the last block publishes one word per source. reject: as for
// dispatch.
void low_latency_combine_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* expert_out,
                              bool reject, void* stream);
// One kernel, blocks per token (each a part of the row; a block loops over
// tokens when the SM budget allows fewer): waits for every owner's word, then
// out[t] = sum over k in order of w[t][k] * row(t, k) in FP32 (multiply and add
// rounded separately, as the CPU codecs), rounded once to g.dtype.
void low_latency_combine_recv(const LowLatencyGeometry& g, const LowLatencyBuffers& b, int num_tokens, void* out,
                              void* stream);

}  // namespace epcomm::kernels::cuda
