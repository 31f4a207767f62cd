// SPDX-License-Identifier: MIT
// CRC32C over the rows that cross a node peer's memory (ExchangeConfig::checksum):
// the host part, and the whole of it for rows in host (shared) memory.
//
// Two places rows cross between node peers:
//   dispatch  a forwarder copies each payload row into its owner's slot; the copy
//             signs the row from the bytes it moves into the owner's row_sum; the
//             owner checks every such row once all its peers' writes_done flags are
//             up, in the pass of its fan-out (the copy of the row into the token's
//             other experts' rows, or the check alone for a row without one);
//   combine   an owner sums its expert outputs of each token a node peer forwards
//             into one owner partial in its own slot (combine_op.cpp); the
//             encode of each partial signs it into partial_sum as it writes it,
//             and each forwarder checks the partials it reads as its node
//             pre-reduction sums them.
// So, but for a dispatch row without a second expert on its owner (nothing else
// there reads it), no byte is read for its checksum alone: the row mover (host_row_mover.cpp)
// takes and checks the checksums in the passes that move the rows, on the worker
// pool, and reports a row that failed to a CorruptRows; the operation raises the
// error once its mover is idle, before it publishes anything built from the row.
// A row's checksum is its BlockChecksum (its CRC32C, util/crc32c.hpp). Rows a
// rank writes and reads itself are not signed: they never leave its own memory.
// A mismatch throws Error(kDataCorrupted) naming the row, the rank that wrote it,
// the token and the operation, which fails the group.
//
// With rows in GPU memory the same rows are signed and checked at the same
// points by the kernels that write and read them (device_plan_steps.hpp),
// which record the first mismatch for the host; the operation raises it here,
// with the same message, once its mover is idle. There an owner pushes each
// partial into its forwarder's slot instead, and signs it there (into the
// forwarder's partial_sum) from the bytes as they landed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "exchange/row_mover.hpp"
#include "exchange/slot_layout.hpp"
#include "group_state.hpp"
#include "util/crc32c.hpp"

namespace epcomm::detail {

// The exchange's part: who this rank is, and the fault-injection count.
class NodePeerChecksums {
 public:
  // device_memory: the rows live in GPU memory (named so in the messages).
  NodePeerChecksums(const GroupState& group, bool device_memory);

  // One operation's signed and checked rows.
  class Rows {
   public:
    // what: "dispatch row", "owner partial row".
    Rows(NodePeerChecksums& checksums, const char* what, uint64_t seq)
        : sums_(checksums), what_(what), seq_(seq), corrupt_(std::make_shared<CorruptRows>()) {}

    // Where this operation's batches report a row that failed its check.
    const std::shared_ptr<CorruptRows>& corrupt() const { return corrupt_; }

    // Dispatch, forwarder side: adds to `copies` the copy of the row at `src` into
    // a node peer's row at `dst`, signed into `sum` (the row's entry of the owner's
    // row_sum) as it is copied.
    void add_signed_copy(RowCopies& copies, const std::byte* src, std::byte* dst, BlockChecksum* sum);
    // Once the signed rows landed, before the flag that shows them to the peers.
    // Fault injection (EPCOMM_FAULT_FLIP_NODE_BIT=n): the n-th operation of this
    // exchange that signed a row gets one bit of its first signed row flipped.
    void publish();
    // The same decision for rows in GPU memory, where the caller flips the bit:
    // whether this operation, which signed a row if signed_any, is the one.
    bool flip_due(bool signed_any);

    // Dispatch, owner side: the checksum row `p` of `mine` (this rank's slot) must
    // have, if a node peer wrote it (a payload row of a source whose forwarder is
    // another rank), else null.
    const BlockChecksum* peer_written(const SlotView& mine, int64_t p) const;
    // Dispatch, owner side, once the checking batch ran: throws if it found a row
    // of `mine` corrupted.
    void raise_if_dispatch_row_corrupt(const SlotView& mine) const;

    // Combine, owner side: where the encode of the owner partials of token-list
    // entries `entry`, `entry` + 1, ... into `mine` (this rank's slot) signs them
    // (RowMover::encode's row_sums).
    BlockChecksum* owner_partial_sums(const SlotView& mine, int32_t entry);
    // Combine, reader side: the checksum the owner partial of token-list entry
    // `entry` in node peer `owner`'s slot must have.
    const BlockChecksum* owner_partial_sum(const SlotView& owner, int64_t entry) const {
      return &owner.partial_sum[entry];
    }
    // Combine, reader side, once the summing batches ran: throws if they found a
    // partial corrupted; `owners` are the node's slots by local rank.
    void raise_if_owner_partial_corrupt(const std::vector<SlotView>& owners) const;

    // Rows in GPU memory, checked there: throws the mismatch of dispatch row `p`
    // of this rank's slot (token `token` of rank `source`), which has CRC32C `got`
    // where its writer took `expected`.
    [[noreturn]] void raise_dispatch_row_mismatch(int64_t p, uint32_t got, uint32_t expected, std::size_t bytes,
                                                  int32_t source, int32_t token) const;
    // The same for the owner partial of token-list entry `entry` of local rank
    // `owner`, its writer, in the slot of local rank `holder` (the owner's own
    // where forwarders read it, the forwarder's where the owner pushes it).
    [[noreturn]] void raise_owner_partial_mismatch(int owner, int holder, int64_t entry, uint32_t got,
                                                   uint32_t expected, std::size_t bytes, int32_t source,
                                                   int32_t token) const;

   private:
    // Throws the mismatch of row `row` (`bytes` long), which has CRC32C `got`
    // where its writer took `expected`; `owner` holds the memory, `writer` (epcomm
    // ranks both) wrote the row, for source token `token` of rank `source`.
    [[noreturn]] void fail(int64_t row, uint32_t got, uint32_t expected, std::size_t bytes, int owner, int writer,
                           int32_t source, int32_t token) const;
    void note_signed(std::byte* dst, std::size_t bytes);

    NodePeerChecksums& sums_;
    const char* what_;
    uint64_t seq_;
    std::shared_ptr<CorruptRows> corrupt_;
    std::byte* first_dst_ = nullptr;  // first row signed (fault injection)
    std::size_t first_bytes_ = 0;
  };

 private:
  const GroupState& group_;
  const char* memory_;  // "shared memory" or "GPU memory"
  int flip_at_ = 0;    // fault injection: the n-th signing operation (0: none)
  int published_ = 0;  // signing operations so far
};

}  // namespace epcomm::detail
