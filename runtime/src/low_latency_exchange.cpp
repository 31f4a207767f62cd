// SPDX-License-Identifier: MIT
// LowLatencyExchange: the public face of low_latency/backend.
#include <epcomm/low_latency.hpp>

#include "low_latency/backend.hpp"
#include "low_latency/buffer_layout.hpp"

namespace epcomm {

LowLatencyExchange::LowLatencyExchange(const Group& group, const LowLatencyConfig& config)
    : engine_(detail::make_low_latency_backend(group.state(), config)) {}

LowLatencyExchange::~LowLatencyExchange() = default;

LowLatencyMemory LowLatencyExchange::memory_needed(const LowLatencyConfig& config, int ranks, int ranks_per_node) {
  const detail::LowLatencyShape shape = detail::LowLatencyShape::of(config, ranks, ranks_per_node);
  return {detail::SharedLayout(shape).bytes, detail::PrivateLayout(shape).bytes};
}

const LowLatencyConfig& LowLatencyExchange::config() const { return engine_->config(); }
void LowLatencyExchange::dispatch_send(const LowLatencyDispatchInput& input) { engine_->dispatch_send(input); }
LowLatencyRecv LowLatencyExchange::dispatch_recv(void* stream) { return engine_->dispatch_recv(stream); }
void LowLatencyExchange::combine_send(const void* expert_out, void* stream) {
  engine_->combine_send(expert_out, stream);
}
void LowLatencyExchange::combine_recv(void* out, void* stream) { engine_->combine_recv(out, stream); }
bool LowLatencyExchange::progress() { return engine_->progress(); }

}  // namespace epcomm
