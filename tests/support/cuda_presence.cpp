// SPDX-License-Identifier: MIT
#include "support/cuda_presence.hpp"

#ifdef EPCOMM_TEST_WITH_CUDA
#include "epcomm_kernels/cuda_codec.hpp"
#endif

namespace epcomm_test {

bool cuda_device_present() {
#ifdef EPCOMM_TEST_WITH_CUDA
  return epcomm::kernels::cuda::cuda_device_available();
#else
  return false;  // built without CUDA: no device can be used
#endif
}

}  // namespace epcomm_test
