// SPDX-License-Identifier: MIT
// epcomm — two-micro-batch schedules that hide expert-parallel communication.
//
// DeepSeek-V3 splits each batch in two: while one micro-batch computes, the other's
// dispatch or combine is in flight. These helpers run that schedule over a stack of
// MoE layers, given the caller's compute stages; the exchange's progress (the
// group's background thread, or the waits inside the schedule) moves the bytes.
// docs/overlap.md draws the timelines.
//
// Requirements: ExchangeConfig::max_inflight >= 2, and every rank runs the same
// schedule (the exchanges inside are collective).
//
// With device memory, each micro-batch's combine goes on the stream its dispatch
// input named (DispatchInput::stream), so two micro-batches on two streams stay
// ordered each on its own; ExchangeConfig::gpu_sm_budget leaves the other
// micro-batch's kernels the SMs the exchange's do not take.
#pragma once

#include <epcomm/exchange.hpp>
#include <epcomm/export.hpp>

#include <functional>

namespace epcomm {

// One micro-batch's compute stages. `layer` counts from 0.
struct MicroBatchStages {
  // Attention of `layer` (and the gate): returns this micro-batch's dispatch input.
  // For layer > 0 it may read combine_output(layer - 1), which is complete.
  std::function<DispatchInput(int layer)> attention;
  // Decode only: the first half of attention, run before `attention` (optional).
  std::function<void(int layer)> attention_prologue;
  // Routed experts: read handle.rows(), write outputs to handle.expert_out_buffer().
  std::function<void(int layer, const DispatchHandle& handle)> experts;
  // Shared expert of `layer`; independent of the exchange (optional).
  std::function<void(int layer)> shared;
  // Where combine writes this micro-batch's [num_tokens, hidden] for `layer`.
  std::function<void*(int layer)> combine_output;
};

// Prefill. Per layer, compute runs ATTN(1) SHARED(0) ATTN(0) MLP(1) MLP(0) SHARED(1)
// while communication runs COMBINE(0) DISPATCH(1) DISPATCH(0) COMBINE(1).
EPCOMM_API void run_prefill_two_batch(Exchange& exchange, const MicroBatchStages& mb0, const MicroBatchStages& mb1,
                           int layers);

// Decode: attention split in two (attention_prologue, attention); each micro-batch's
// dispatch and combine run under the other's attention and experts.
EPCOMM_API void run_decode_two_batch(Exchange& exchange, const MicroBatchStages& mb0, const MicroBatchStages& mb1,
                          int layers);

// The same stages with no overlap: every exchange is waited for at once. The
// reference the overlapped schedules are measured and checked against.
EPCOMM_API void run_serial_two_batch(Exchange& exchange, const MicroBatchStages& mb0, const MicroBatchStages& mb1,
                          int layers);

}  // namespace epcomm
