// SPDX-License-Identifier: MIT
// The device-side check of a config's SM budget (ExchangeConfig and
// LowLatencyConfig::gpu_sm_budget; the rule that applies it is
// epcomm_kernels/sm_budget.hpp).
#pragma once

namespace epcomm::detail {

// Throws Error(kInvalidArgument) naming config_name's gpu_sm_budget, the device and
// its SM count when the budget is negative or above the device's SMs. 0: no bound.
void check_sm_budget(int budget, int device, const char* config_name);

}  // namespace epcomm::detail
