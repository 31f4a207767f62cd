// SPDX-License-Identifier: MIT
// The low-latency exchange's device path (docs/low_latency.md): kernels that
// write rows into node peers' receive buffers (mapped by CUDA IPC) and into pinned
// staging messages for the host proxy, publish arrival words behind a system-scope
// fence, wait on arrival words with a clock64() timeout, and combine in the host
// engine's order. Every call only enqueues on `stream` (a cudaStream_t as void*),
// so a dispatch or combine can be captured in a CUDA graph; no call waits for
// the GPU. Like cuda_codec.hpp, no CUDA type appears here.
//
// STATUS: compiled (sm_90, -Werror) but NOT YET RUN ON A GPU.
#pragma once

#include <epcomm/formats.hpp>
#include <epcomm/types.hpp>

#include <cstddef>
#include <cstdint>

namespace epcomm::kernels::cuda {

// The exchange's shape and the byte offsets inside every rank's shared region, as
// the host engine lays them out (runtime/src/low_latency/buffer_layout).
struct LowLatencyGeometry {
  int ranks = 0;
  int ranks_per_node = 0;
  int rank = 0;
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
  int64_t dispatch_message_bytes = 0;
  int64_t combine_message_bytes = 0;
  int64_t max_rows_to_rank = 0;
};

// What a wait or a check found, written to pinned host memory for the host to
// report at its next call; code 0 while all is well.
struct LowLatencyDiagnosis {
  enum Code : int32_t { kNone = 0, kBadInput = 1, kTimeout = 2, kRejected = 3, kRingFull = 4, kBadOutput = 5 };
  int32_t code;
  int32_t rank;    // kTimeout: first silent rank; kRejected: first rejecting rank
  int32_t token;   // kBadInput: the (token, k) of the first bad entry
  int32_t k;
  int32_t expert;  // its expert id
  float weight;    // its weight
};

// Buffers, all reachable by this GPU.
struct LowLatencyBuffers {
  uint8_t* const* shared = nullptr;  // device array [ranks_per_node]: node peers' regions (own included)
  uint8_t* own_shared = nullptr;     // this rank's region (= shared[local rank]), for launches from the host
  uint8_t* dispatch_staging = nullptr;  // pinned: a message per rank on another node, in rank order
  uint8_t* combine_staging = nullptr;
  uint8_t* ring = nullptr;  // pinned: the proxy command ring (low_latency_wire.hpp)
  uint32_t ring_capacity = 0;
  LowLatencyDiagnosis* diagnosis = nullptr;  // pinned
  // Device scratch: [tokens * topk], [ranks * J] twice, [ranks], 3 flags.
  int32_t* slot = nullptr;
  int32_t* counts = nullptr;
  int32_t* first_row = nullptr;
  int32_t* rows_to = nullptr;
  int32_t* flags = nullptr;  // [0]: input rejected, [1]: a wait failed or saw a rejection
  unsigned long long* bad_output = nullptr;  // smallest row * hidden + column combine_format cannot encode
  // The output and its indices: [J, ranks * max_tokens] rows, counts [J].
  uint8_t* out_rows = nullptr;
  int32_t* out_counts = nullptr;
  int32_t* out_src_rank = nullptr;
  int32_t* out_src_token = nullptr;
  int32_t* out_k = nullptr;
  int32_t* combine_pos = nullptr;  // [J, ranks * max_tokens]: row's place in its message
};

// Loads every kernel below now (CUDA loads lazily at the first launch, which can
// wait for running kernels, as the ones spinning on arrival words).
void low_latency_preload_kernels();

// Plans (checks the input, slots, counts), encodes every routed (token, k) row
// into its owner's slot or staging message, then publishes the arrival words and
// the proxy commands. num_tokens must be in [0, max_tokens] (checked by the host).
void low_latency_dispatch_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* x,
                               const int32_t* topk_idx, const float* topk_weights, int num_tokens, uint64_t round,
                               void* stream);
// Waits for every source's words of `round` (timeout_cycles of clock64()), then
// lays the rows out per expert in source order.
void low_latency_dispatch_recv(const LowLatencyGeometry& g, const LowLatencyBuffers& b, uint64_t round,
                               uint64_t timeout_cycles, void* stream);
// expert_out: [J, ranks * max_tokens, hidden] of g.dtype.
void low_latency_combine_send(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const void* expert_out,
                              uint64_t round, void* stream);
// Waits for every owner's word, then out[t] = sum over k in order of w[t][k] *
// row(t, k) in FP32 (multiply and add rounded separately, as the CPU codecs),
// rounded once to g.dtype.
void low_latency_combine_recv(const LowLatencyGeometry& g, const LowLatencyBuffers& b, const float* topk_weights,
                              int num_tokens, void* out, uint64_t round, uint64_t timeout_cycles, void* stream);

}  // namespace epcomm::kernels::cuda
