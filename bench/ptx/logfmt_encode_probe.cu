// SPDX-License-Identifier: MIT
// Not built: the input of ptx_common_path.py (README.md beside it). One 16-lane
// group's kAhead tiles of a 7168-wide BF16 row, encoded as encode_kernel does for
// LogFMT-8 and LogFMT-10, so that the PTX of one group's work can be read and counted.
#include "tile_formats.cuh"

using namespace epcomm::kernels::cuda::detail;

template <int kBits>
__global__ void probe(const uint16_t* in, uint8_t* out, Layout layout, unsigned long long* bad) {
  Lane l[kAhead];
  Raw<uint16_t> raw[kAhead];
#pragma unroll
  for (int u = 0; u < kAhead; ++u) {
    l[u] = lane_in(0, static_cast<int>(threadIdx.x / kLanesPerTile) + kTilesPerBlock * u, 7168);
    load_raw(in + l[u].col0, l[u].valid, raw[u]);
  }
  LogFmt<kBits>::template encode_tiles<kAhead>(l, [&](int u, Elems& v) { widen(raw[u], v); }, layout, out, 0, 7168,
                                               bad);
}
template __global__ void probe<8>(const uint16_t*, uint8_t*, Layout, unsigned long long*);
template __global__ void probe<10>(const uint16_t*, uint8_t*, Layout, unsigned long long*);
