// SPDX-License-Identifier: MIT
// CRC32C over the rows that cross a node peer's shared memory
// (ExchangeConfig::checksum; rows in host memory).
//
// Two places rows cross between node peers:
//   dispatch  a forwarder copies each payload row into its owner's slot; the
//             forwarder signs the row from the bytes it copies (not from the copy)
//             into the owner's row_sum, the owner checks every such row once all its
//             peers' writes_done flags are up, before it fans rows out locally;
//   combine   an owner stages its expert outputs in its own slot; it signs each row
//             a peer will read (from the caller's buffer) into out_sum, and each
//             forwarder checks the rows it reads before summing them.
// A row's checksum is its BlockChecksum (three CRC32Cs, util/crc32c.hpp). Rows a rank
// writes and reads itself are not signed: they never leave its own memory.
// A mismatch throws Error(kDataCorrupted) naming the row, the rank that wrote it,
// the token and the operation, which fails the group.
#pragma once

#include <cstddef>
#include <cstdint>

#include "exchange/slot_layout.hpp"
#include "group_state.hpp"
#include "util/crc32c.hpp"

namespace epcomm::detail {

// The exchange's part: who this rank is, and the fault-injection count.
class NodePeerChecksums {
 public:
  explicit NodePeerChecksums(const GroupState& group);

  // One operation's signed rows.
  class Rows {
   public:
    // what: "dispatch row", "expert output row".
    Rows(NodePeerChecksums& checksums, const char* what, uint64_t seq) : sums_(checksums), what_(what), seq_(seq) {}

    // Row `row` of a slot whose checksum table is `table`, at `dst`, holds (or is
    // about to hold) a copy of the `bytes` at `src`: records their checksum.
    void sign(BlockChecksum* table, int64_t row, std::byte* dst, const std::byte* src, std::size_t bytes);
    // Once the signed rows landed, before the flag that shows them to the peers.
    // Fault injection (EPCOMM_FAULT_FLIP_NODE_BIT=n): the n-th operation of this
    // exchange that signed a row gets one bit of its first signed row flipped.
    void publish();
    // Checks row `row` at `data` against table[row]; `owner` holds the memory,
    // `writer` (epcomm ranks both) wrote the row, for source token `token` of
    // rank `source`.
    void verify(const BlockChecksum* table, int64_t row, const std::byte* data, std::size_t bytes, int owner,
                int writer, int32_t source, int32_t token) const;

    // Dispatch, owner side: checks every payload row that a node peer wrote into
    // `mine` (this rank's slot).
    void verify_dispatch_rows(const SlotView& mine) const;
    // Combine, owner side: signs the rows of `mine` (this rank's slot) that node
    // peers will read, from `expert_out` (the caller's buffer, laid out as the slot).
    void sign_expert_outputs(const SlotView& mine, const std::byte* expert_out);
    // Combine, reader side: checks expert output row `row` of node peer
    // `owner_local`'s slot `owner`.
    void verify_expert_output(const SlotView& owner, int owner_local, int64_t row) const;

   private:
    NodePeerChecksums& sums_;
    const char* what_;
    uint64_t seq_;
    std::byte* first_dst_ = nullptr;  // first row signed (fault injection)
    std::size_t first_bytes_ = 0;
  };

 private:
  const GroupState& group_;
  int flip_at_ = 0;    // fault injection: the n-th signing operation (0: none)
  int published_ = 0;  // signing operations so far
};

}  // namespace epcomm::detail
