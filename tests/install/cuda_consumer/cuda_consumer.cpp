// SPDX-License-Identifier: MIT
// Links the installed epcomm::cuda_kernels and calls its host-side code (no GPU
// needed): combine_sources() groups source rows by destination, and a bad index is
// an epcomm::Error caught here, across the library boundary.
#include <epcomm/error.hpp>
#include <epcomm_kernels/cuda_codec.hpp>

#include <cstdint>
#include <cstdio>
#include <vector>

int main() {
  namespace cuda = epcomm::kernels::cuda;
  // Source rows 0..4 go to destinations 2, 0, 2, 1, 0.
  const int32_t dst_index[] = {2, 0, 2, 1, 0};
  const cuda::CombineSources got = cuda::combine_sources(dst_index, 5, 3);
  const std::vector<int32_t> offsets = {0, 2, 3, 5}, sources = {1, 4, 3, 0, 2};
  if (got.offsets != offsets || got.sources != sources) {
    std::fprintf(stderr, "combine_sources: wrong grouping\n");
    return 1;
  }
  const int32_t bad[] = {3};
  try {
    cuda::combine_sources(bad, 1, 3);
    std::fprintf(stderr, "combine_sources: index 3 of 3 rows accepted\n");
    return 1;
  } catch (const epcomm::Error& e) {
    std::printf("cuda_consumer: grouping right, bad index refused (%s); GPU present: %d\n",
                e.what(), int(cuda::cuda_device_available()));
  }
  return 0;
}
