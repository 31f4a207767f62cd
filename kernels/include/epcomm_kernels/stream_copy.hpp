// SPDX-License-Identifier: MIT
// A copy whose destination bypasses the caches (non-temporal stores), for bulk
// row copies whose destinations this core will not read soon: another rank's
// slot, a send block, the rows of a local fan-out. It writes whole lines without
// reading them first and leaves the caches to the data still in use; a copy of
// many rows then moves a third less memory traffic than memcpy.
#pragma once

#include <cstddef>

namespace epcomm::kernels {

// dst[0, bytes) = src[0, bytes); the ranges must not overlap. The stores are
// complete (fenced) when it returns, as far as this thread is concerned: publish
// them to other threads as after any store (a lock, an atomic release).
void stream_copy(void* dst, const void* src, std::size_t bytes);

}  // namespace epcomm::kernels
