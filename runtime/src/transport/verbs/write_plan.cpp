// SPDX-License-Identifier: MIT
#include "transport/verbs/write_plan.hpp"

#include <algorithm>

#include "util/check.hpp"

namespace epcomm::detail {
namespace {
// offset + length <= size, without overflow.
bool fits(uint64_t offset, uint64_t length, uint64_t size) { return offset <= size && length <= size - offset; }
}  // namespace

void plan_write(uint64_t local_length, uint64_t local_offset, const RemoteRegion& remote, uint64_t remote_offset,
                uint64_t length, uint32_t max_chunk, std::vector<WriteChunk>& out) {
  EPCOMM_REQUIRE(fits(local_offset, length, local_length), kInvalidArgument,
                 "RDMA write of " << length << " bytes at local offset " << local_offset
                                  << " leaves its local region of " << local_length << " bytes");
  EPCOMM_REQUIRE(fits(remote_offset, length, remote.length), kInvalidArgument,
                 "RDMA write of " << length << " bytes at remote offset " << remote_offset
                                  << " leaves the peer's region of " << remote.length << " bytes");
  EPCOMM_REQUIRE(max_chunk > 0, kInvalidArgument, "RDMA write: maximum chunk size is 0");
  uint64_t done = 0;
  do {
    const uint64_t n = std::min<uint64_t>(max_chunk, length - done);
    out.push_back(WriteChunk{local_offset + done, remote.addr + remote_offset + done, static_cast<uint32_t>(n),
                             done + n == length});
    done += n;
  } while (done < length);
}

}  // namespace epcomm::detail
