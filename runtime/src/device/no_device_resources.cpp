// SPDX-License-Identifier: MIT
// A build without CUDA: device memory is refused when the exchange is built.
#include "device/device_resources.hpp"
#include "util/check.hpp"

namespace epcomm::detail {

std::unique_ptr<DeviceResources> make_device_resources(GroupState&, int, int, std::size_t, std::size_t,
                                                       std::size_t) {
  EPCOMM_FAIL(kUnsupported, "ExchangeConfig::memory is device but this build of epcomm has no CUDA support "
                            "(configure with a CUDA compiler and EPCOMM_WITH_CUDA=ON)");
}

}  // namespace epcomm::detail
