// SPDX-License-Identifier: MIT
// Which TileKernels the codecs run: the vectorised set unless EPCOMM_KERNELS=scalar.
#include <cstdlib>
#include <cstring>

#include "cpu/simd_kernels.hpp"
#include "epcomm_kernels/tile_kernels.hpp"

namespace epcomm::kernels {

const TileKernels& active_kernels() {
  static const TileKernels& chosen = [] () -> const TileKernels& {
    const char* v = std::getenv("EPCOMM_KERNELS");
    if (v != nullptr && std::strcmp(v, "scalar") == 0) return reference_kernels();
    return simd_kernels();
  }();
  return chosen;
}

}  // namespace epcomm::kernels
