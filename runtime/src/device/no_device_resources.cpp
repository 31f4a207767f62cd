// SPDX-License-Identifier: MIT
// A build without CUDA: device memory is refused when the exchange is built.
#include "device/device_resources.hpp"
#include "device/peer_access.hpp"
#include "util/check.hpp"

namespace epcomm::detail {

// No GPU to ask: the construction fails in make_device_resources.
NodePeerAccess node_peer_access(GroupState&, int) { return {}; }

std::unique_ptr<DeviceResources> make_device_resources(GroupState&, int, int, std::size_t, bool, std::size_t,
                                                       std::size_t) {
  EPCOMM_FAIL(kUnsupported, "ExchangeConfig::memory is device but this build of epcomm has no CUDA support "
                            "(configure with a CUDA compiler and EPCOMM_WITH_CUDA=ON)");
}

}  // namespace epcomm::detail
