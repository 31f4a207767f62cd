// SPDX-License-Identifier: MIT
#include "device/sm_budget.hpp"

#include "device/cuda_call.hpp"

namespace epcomm::detail {

void check_sm_budget(int budget, int device, const char* config_name) {
  EPCOMM_REQUIRE(budget >= 0, kInvalidArgument,
                 config_name << "::gpu_sm_budget=" << budget << " is negative (0 = no bound)");
  if (budget == 0) return;
  int sms = 0;
  EPCOMM_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // A budget past the device is a config written for another GPU: said, not
  // silently clipped to the whole device.
  EPCOMM_REQUIRE(budget <= sms, kInvalidArgument,
                 config_name << "::gpu_sm_budget=" << budget << " is more than the " << sms << " SMs of CUDA device "
                             << device << " (0 = no bound)");
}

}  // namespace epcomm::detail
