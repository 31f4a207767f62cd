// SPDX-License-Identifier: MIT
// stream_copy: Highway's Stream (non-temporal store) over the destination's aligned
// body, compiled for every SIMD target and dispatched at run time like the tile
// kernels; the unaligned head and tail go through memcpy.
#include "epcomm_kernels/stream_copy.hpp"

#include <cstdint>
#include <cstring>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/stream_copy.cpp"
#include <hwy/foreach_target.h>  // re-includes this file once per target

#include <hwy/cache_control.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace epcomm::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void StreamCopy(void* dst, const void* src, std::size_t bytes) {
  const hn::ScalableTag<uint8_t> d;
  const std::size_t lanes = hn::Lanes(d);
  auto* out = static_cast<uint8_t*>(dst);
  const auto* in = static_cast<const uint8_t*>(src);
  // Stream needs a vector-aligned destination.
  const std::size_t misalign = reinterpret_cast<uintptr_t>(out) % lanes;
  std::size_t i = misalign == 0 ? 0 : lanes - misalign;
  if (i >= bytes) {
    std::memcpy(out, in, bytes);
    return;
  }
  std::memcpy(out, in, i);
  for (; i + lanes <= bytes; i += lanes) hn::Stream(hn::LoadU(d, in + i), d, out + i);
  std::memcpy(out + i, in + i, bytes - i);
  hwy::FlushStream();
}

}  // namespace epcomm::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace epcomm::kernels {

HWY_EXPORT(StreamCopy);

void stream_copy(void* dst, const void* src, std::size_t bytes) { HWY_DYNAMIC_DISPATCH(StreamCopy)(dst, src, bytes); }

}  // namespace epcomm::kernels
#endif  // HWY_ONCE
