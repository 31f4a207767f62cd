// SPDX-License-Identifier: MIT
// The CSR of sources per destination that accumulate_rows takes, built so each
// destination sees its sources in increasing order: the order of the CPU combine
// loop, which makes the GPU sums bit-identical to it.
#include <epcomm/error.hpp>

#include <cstdint>
#include <string>

#include "epcomm_kernels/cuda_codec.hpp"

namespace epcomm::kernels::cuda {

CombineSources combine_sources(const int32_t* dst_index, int64_t count, int64_t dst_rows) {
  // Source rows and offsets are int32 on the device.
  if (count < 0 || dst_rows < 0 || count > INT32_MAX) {
    throw Error(ErrorCode::kInvalidArgument, "epcomm: combine_sources needs 0 <= count <= INT32_MAX and dst_rows >= 0, got count " +
                                                 std::to_string(count) + ", dst_rows " + std::to_string(dst_rows));
  }
  CombineSources out;
  out.offsets.assign(static_cast<std::size_t>(dst_rows) + 1, 0);
  for (int64_t i = 0; i < count; ++i) {
    const int32_t d = dst_index[i];
    if (d < 0 || d >= dst_rows) {
      throw Error(ErrorCode::kInvalidArgument, "epcomm: combine_sources: destination " + std::to_string(d) +
                                                   " of source row " + std::to_string(i) + " is outside [0, " +
                                                   std::to_string(dst_rows) + ")");
    }
    ++out.offsets[static_cast<std::size_t>(d) + 1];
  }
  for (std::size_t d = 1; d < out.offsets.size(); ++d) out.offsets[d] += out.offsets[d - 1];
  out.sources.resize(static_cast<std::size_t>(count));
  std::vector<int32_t> next(out.offsets.begin(), out.offsets.end() - 1);
  for (int64_t i = 0; i < count; ++i) {
    out.sources[static_cast<std::size_t>(next[static_cast<std::size_t>(dst_index[i])]++)] = static_cast<int32_t>(i);
  }
  return out;
}

}  // namespace epcomm::kernels::cuda
