// SPDX-License-Identifier: MIT
#include "low_latency/backend.hpp"

#include "exchange/config_agreement.hpp"
#include "low_latency/buffer_layout.hpp"
#include "low_latency/device_engine.hpp"
#include "low_latency/engine.hpp"
#include "util/env.hpp"

namespace epcomm::detail {
namespace {

// Every rank compares every rank's config (so a mismatch fails all of them at
// once), learns rank 0's random id (its tags) and which pooled communicator is free
// everywhere.
ConstructionAgreement agree_on_config(const LowLatencyConfig& c, GroupState& g) {
  const ConfigField fields[] = {{"num_experts", c.num_experts},
                                {"topk", c.topk},
                                {"hidden", c.hidden},
                                {"max_tokens_per_rank", c.max_tokens_per_rank},
                                {"dtype", static_cast<int64_t>(c.dtype)},
                                {"dispatch_format", static_cast<int64_t>(c.dispatch_format)},
                                {"combine_format", static_cast<int64_t>(c.combine_format)},
                                {"memory", static_cast<int64_t>(c.memory)},
                                {"gpu_sm_budget (EPCOMM_GPU_SM_BUDGET)", c.gpu_sm_budget}};
  return agree_on_construction(g, "LowLatencyConfig", "LowLatencyExchange construction", fields);
}

}  // namespace

std::shared_ptr<LowLatencyBackend> make_low_latency_backend(std::shared_ptr<GroupState> group,
                                                            const LowLatencyConfig& asked) {
  // EPCOMM_GPU_SM_BUDGET sets a budget the config leaves 0.
  LowLatencyConfig config = asked;
  if (config.gpu_sm_budget == 0) config.gpu_sm_budget = env::gpu_sm_budget();
  // A bad config throws here, before the collective, as on every rank that has it.
  LowLatencyShape::of(config, group->size, group->ranks_per_node);
  const ConstructionAgreement agreed = agree_on_config(config, *group);
  if (config.memory == MemorySpace::kDevice) return make_device_low_latency_engine(std::move(group), config, agreed);
  return std::make_shared<LowLatencyEngine>(std::move(group), config, agreed);
}

}  // namespace epcomm::detail
