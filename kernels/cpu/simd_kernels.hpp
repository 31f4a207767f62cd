// SPDX-License-Identifier: MIT
// The Highway-vectorised TileKernels (kernels/cpu/simd_kernels.cpp), bit-identical
// to reference_kernels().
#pragma once

#include "epcomm_kernels/tile_kernels.hpp"

namespace epcomm::kernels {

// Every call dispatches to the best SIMD target this CPU supports at the time of the
// call (so a test can walk the targets with hwy::SetSupportedTargetsForTest); `name`
// is the target the first use chose, e.g. "AVX3".
const TileKernels& simd_kernels();

}  // namespace epcomm::kernels
