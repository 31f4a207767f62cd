// SPDX-License-Identifier: MIT
// Offset math of one RDMA write: bounds checks on both sides and the split into
// chunks no longer than the port's maximum message size (8 MiB on soft-RoCE, 2 GiB
// on most HCAs). Pure, so it is tested without a device.
#pragma once

#include <cstdint>
#include <vector>

namespace epcomm::detail {

// A peer's registered region as the peer published it.
struct RemoteRegion {
  uint64_t addr = 0;
  uint64_t length = 0;
  uint32_t rkey = 0;
};

struct WriteChunk {
  uint64_t local_offset;  // into the local region
  uint64_t remote_addr;   // absolute, in the peer's address space
  uint32_t length;
  bool last;  // carries the immediate: its arrival means every chunk before it landed
};

// Appends the chunks of a `length`-byte write from [local_offset, +length) of a
// local region of `local_length` bytes to [remote_offset, +length) of `remote`.
// A zero-length write is one zero-length chunk (a pure signal). Throws
// Error(kInvalidArgument) naming the numbers when a range leaves its region.
void plan_write(uint64_t local_length, uint64_t local_offset, const RemoteRegion& remote, uint64_t remote_offset,
                uint64_t length, uint32_t max_chunk, std::vector<WriteChunk>& out);

}  // namespace epcomm::detail
