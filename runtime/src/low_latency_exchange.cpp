// SPDX-License-Identifier: MIT
// LowLatencyExchange: the public face of low_latency/engine.
#include <epcomm/low_latency.hpp>

#include "low_latency/buffer_layout.hpp"
#include "low_latency/engine.hpp"

namespace epcomm {

LowLatencyExchange::LowLatencyExchange(const Group& group, const LowLatencyConfig& config)
    : engine_(std::make_shared<detail::LowLatencyEngine>(group.state(), config)) {}

LowLatencyExchange::~LowLatencyExchange() = default;

LowLatencyMemory LowLatencyExchange::memory_needed(const LowLatencyConfig& config, int ranks, int ranks_per_node) {
  const detail::LowLatencyShape shape = detail::LowLatencyShape::of(config, ranks, ranks_per_node);
  return {detail::SharedLayout(shape).bytes, detail::PrivateLayout(shape).bytes};
}

const LowLatencyConfig& LowLatencyExchange::config() const { return engine_->config(); }
void LowLatencyExchange::dispatch_send(const LowLatencyDispatchInput& input) { engine_->dispatch_send(input); }
LowLatencyRecv LowLatencyExchange::dispatch_recv() { return engine_->dispatch_recv(); }
void LowLatencyExchange::combine_send(const void* expert_out) { engine_->combine_send(expert_out); }
void LowLatencyExchange::combine_recv(void* out) { engine_->combine_recv(out); }
bool LowLatencyExchange::progress() { return engine_->progress(); }

}  // namespace epcomm
