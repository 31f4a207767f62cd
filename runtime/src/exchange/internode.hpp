// SPDX-License-Identifier: MIT
// The exchange's inter-node tier: how one contiguous block of a slot's send buffer
// reaches the rail peer on another node (the rank with this rank's local index
// there). Two implementations share the dispatch/combine protocol:
//
//   MPI    matched MPI_Isend/MPI_Irecv; the receiver posts where a block lands.
//   verbs  RDMA write with immediate straight into the peer's receive buffer at an
//          offset both sides compute (fixed per source node: no rings, no
//          matching), the immediate telling the receiver which operation arrived.
//
// Receive buffers sit at fixed offsets for both (block_offset()), so the ops do not
// care which one runs. What differs is when a sender may write: with MPI the data
// waits in the library until the receive is posted; a one-sided write lands at once,
// so it must wait until the receiver's block is free (needs_clear_to_send()):
// dispatch waits for the rail peer's layout message, combine for a "ready" signal
// the receiver sends when the combine begins (announce_ready / take_ready).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace epcomm::detail {

class Engine;

// Which pair of slot buffers a transfer uses.
enum class RailBuffer {
  kDispatch,  // rail_send -> rail_recv: packed tokens (metadata + rows)
  kCombine,   // combine_send -> combine_recv: encoded node partial sums
};

// The outstanding transfers of one operation phase, each remembered with its peer
// (epcomm rank), so a stalled exchange can name who has not answered.
class Transfers {
 public:
  virtual ~Transfers() = default;
  // Indices (in add order) that completed since the last call.
  virtual const std::vector<int>& test_some() = 0;
  virtual bool all_done() const = 0;
  virtual int peer(int index) const = 0;
  // "3 (receive), 5 (send)" for what is still pending.
  virtual std::string pending_peers() const = 0;
  // Drops pending transfers when an operation is abandoned after an error. False
  // when a receive could not be withdrawn: its buffer must then outlive the process
  // (see Op::abandon_requests).
  virtual bool abandon() = 0;
};

class InterNode {
 public:
  virtual ~InterNode() = default;
  virtual const char* name() const = 0;
  virtual std::unique_ptr<Transfers> new_transfers() = 0;

  // Sends `bytes` at `offset` of this rank's send buffer of `buffer` in `slot` to the
  // rail peer on `node`, landing at `remote_offset` of that peer's receive buffer.
  virtual void send(Transfers& set, RailBuffer buffer, int slot, int node, std::size_t offset,
                    std::size_t remote_offset, std::size_t bytes, uint64_t seq) = 0;
  // Expects `bytes` at `offset` of this rank's receive buffer from the rail peer on
  // `node` (both sides of a transfer must agree on seq, size and place).
  virtual void receive(Transfers& set, RailBuffer buffer, int slot, int node, std::size_t offset, std::size_t bytes,
                       uint64_t seq) = 0;

  // One-sided transports: senders must know the receiver's block is free first.
  virtual bool needs_clear_to_send() const = 0;
  // Tells the rail peer on `node` that this rank's receive blocks for operation
  // `seq` may be written; the matching take_ready() on that peer returns true once.
  virtual void announce_ready(int node, uint64_t seq) = 0;
  virtual bool take_ready(int node, uint64_t seq) = 0;

  // Moves what completed since the last call (one progress round); true if
  // anything did. Throws Error naming the peer on a transport failure.
  virtual bool poll() = 0;
};

// Byte offset, in a receive buffer of blocks of `block_bytes` per remote node, of
// the block that node `from` writes on node `to` (own node skipped).
inline std::size_t block_offset(int from, int to, std::size_t block_bytes) {
  return static_cast<std::size_t>(from < to ? from : from - 1) * block_bytes;
}

// The inter-node tier for an engine whose buffers are allocated, chosen by the
// group's transport setting (mpi, verbs, auto): collective over the group.
std::unique_ptr<InterNode> make_internode(Engine& engine);

}  // namespace epcomm::detail
