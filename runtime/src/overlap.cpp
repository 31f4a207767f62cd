// SPDX-License-Identifier: MIT
// The two-micro-batch schedules. Each is a fixed order of begin / compute / wait
// calls; comments name the overlap each step buys. Handles are dropped as soon as
// their combine completed so that two exchange slots always suffice.
#include <epcomm/overlap.hpp>

#include "util/check.hpp"

namespace epcomm {
namespace {

void require_two_slots(const Exchange& exchange, int layers) {
  EPCOMM_REQUIRE(exchange.config().max_inflight >= 2, kInvalidArgument,
                 "two-micro-batch schedules need ExchangeConfig::max_inflight >= 2, got "
                     << exchange.config().max_inflight);
  EPCOMM_REQUIRE(layers >= 0, kInvalidArgument, "layers=" << layers << " is negative");
}

void run_if(const std::function<void(int)>& stage, int layer) {
  if (stage) stage(layer);
}

// Starts the combine of a micro-batch's experts' outputs, on the stream of the
// micro-batch's dispatch (device memory: after its experts' kernels, before its
// next attention's).
CombineHandle begin_combine(Exchange& exchange, const MicroBatchStages& mb, int layer, const DispatchHandle& d,
                            const DispatchInput& in) {
  CombineOptions options;
  options.stream = in.stream;
  return exchange.combine_begin(d, d.expert_out_buffer(), d.num_rows(), mb.combine_output(layer), d.num_tokens(),
                                options);
}

}  // namespace

void run_prefill_two_batch(Exchange& exchange, const MicroBatchStages& mb0, const MicroBatchStages& mb1,
                           int layers) {
  require_two_slots(exchange, layers);
  DispatchHandle d0, d1;
  CombineHandle c0, c1;
  for (int layer = 0; layer < layers; ++layer) {
    const DispatchInput in1 = mb1.attention(layer);  // || COMBINE(0, layer - 1)
    d1 = exchange.dispatch_begin(in1);
    if (layer > 0) run_if(mb0.shared, layer - 1);    // || DISPATCH(1), COMBINE(0)
    if (layer > 0) {
      c0.wait();
      c0 = CombineHandle();
      d0 = DispatchHandle();
    }
    const DispatchInput in0 = mb0.attention(layer);  // || DISPATCH(1)
    d0 = exchange.dispatch_begin(in0);
    d1.wait();
    mb1.experts(layer, d1);                          // || DISPATCH(0)
    c1 = begin_combine(exchange, mb1, layer, d1, in1);
    d0.wait();
    mb0.experts(layer, d0);                          // || COMBINE(1)
    c0 = begin_combine(exchange, mb0, layer, d0, in0);
    run_if(mb1.shared, layer);                       // || COMBINE(1), COMBINE(0)
    c1.wait();
    c1 = CombineHandle();
    d1 = DispatchHandle();
  }
  if (layers > 0) {
    run_if(mb0.shared, layers - 1);                  // || COMBINE(0)
    c0.wait();
  }
}

void run_decode_two_batch(Exchange& exchange, const MicroBatchStages& mb0, const MicroBatchStages& mb1,
                          int layers) {
  require_two_slots(exchange, layers);
  DispatchHandle d0, d1;
  CombineHandle c0, c1;
  for (int layer = 0; layer < layers; ++layer) {
    run_if(mb0.attention_prologue, layer);           // || COMBINE(1, layer - 1)
    const DispatchInput in0 = mb0.attention(layer);
    d0 = exchange.dispatch_begin(in0);
    if (layer > 0) {
      c1.wait();
      c1 = CombineHandle();
      d1 = DispatchHandle();
    }
    run_if(mb1.attention_prologue, layer);           // || DISPATCH(0)
    const DispatchInput in1 = mb1.attention(layer);
    d1 = exchange.dispatch_begin(in1);
    d0.wait();
    run_if(mb0.shared, layer);                       // || DISPATCH(1)
    mb0.experts(layer, d0);
    c0 = begin_combine(exchange, mb0, layer, d0, in0);
    d1.wait();
    run_if(mb1.shared, layer);                       // || COMBINE(0)
    mb1.experts(layer, d1);
    c1 = begin_combine(exchange, mb1, layer, d1, in1);
    c0.wait();                                       // mb0's next attention needs it
    c0 = CombineHandle();
    d0 = DispatchHandle();
  }
  if (layers > 0) c1.wait();
}

void run_serial_two_batch(Exchange& exchange, const MicroBatchStages& mb0, const MicroBatchStages& mb1,
                          int layers) {
  require_two_slots(exchange, layers);
  for (int layer = 0; layer < layers; ++layer) {
    for (const MicroBatchStages* mb : {&mb0, &mb1}) {
      run_if(mb->attention_prologue, layer);
      const DispatchInput in = mb->attention(layer);
      DispatchHandle d = exchange.dispatch(in);
      mb->experts(layer, d);
      begin_combine(exchange, *mb, layer, d, in).wait();
      run_if(mb->shared, layer);
    }
  }
}

}  // namespace epcomm
