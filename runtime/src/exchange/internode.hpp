// SPDX-License-Identifier: MIT
// The exchange's inter-node tier: moves bytes between registered memory regions of
// this rank and of its rail peers (the ranks with this rank's local index on the
// other nodes, named by node). Two implementations share the dispatch/combine
// protocol:
//
//   MPI    matched MPI_Isend/MPI_Irecv; the receiver posts where a block lands.
//   verbs  RDMA write with immediate straight into the peer's receive region at an
//          offset both sides compute (fixed per source node: no rings, no
//          matching), the immediate telling the receiver which operation arrived.
//
// The tier knows regions, not the engine: the engine registers each slot's
// inter-node buffers once, and every rank registers the same regions in the same
// order, so a region's id on this rank also names the matching region of a peer.
// Receive regions hold blocks at fixed offsets for both (block_offset()), so the
// ops do not care which implementation runs. What differs is when a sender may
// write: with MPI the data waits in the library until the receive is posted; a
// one-sided write lands at once, so it must wait until the receiver's block is free
// (needs_clear_to_send()): dispatch waits for the rail peer's layout message,
// combine (and a dispatch on a reused layout, which exchanges none) for a "ready"
// signal the receiver sends when the operation begins (announce_ready /
// take_ready).
#pragma once

#include <epcomm/types.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "util/crc32c.hpp"

namespace epcomm::detail {

// A registered region: its index in registration order (the same on every rank).
using RegionId = int;

// Which protocol message a block is: the MPI tag's phase, the verbs immediate's kind.
enum class BlockKind {
  kDispatch,  // packed tokens (metadata + rows)
  kCombine,   // encoded node partial sums
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

  // Registers [ptr, ptr + bytes) in `space` for sends, receives and peers' writes;
  // before the tier is connected (see make_internode). Throws Error when the
  // tier cannot reach memory of that space.
  virtual RegionId register_region(void* ptr, std::size_t bytes, MemorySpace space) = 0;
  // Why this tier cannot move GPU memory itself (register_region with kDevice:
  // CUDA-aware MPI, GPUDirect RDMA), or empty when it can (rail_memory.hpp).
  virtual std::string device_memory_unsupported() const = 0;

  // Sends `bytes` at `offset` of region `from` to the rail peer on `node`, landing
  // at `remote_offset` of that peer's region `to`. With checksums
  // (InterNodeSetup::checksum), `sum` is given with a block's last chunk: the
  // block's checksum, which the sender took as it built the block
  // (block_checksums.hpp) and the tier carries beside it (read at the call);
  // null otherwise.
  virtual void send(Transfers& set, BlockKind kind, RegionId from, std::size_t offset, int node, RegionId to,
                    std::size_t remote_offset, std::size_t bytes, uint64_t seq, const BlockChecksum* sum) = 0;
  // Expects `bytes` at `offset` of region `into` from the rail peer on `node` (both
  // sides of a transfer must agree on kind, seq, size and place, and on which
  // transfer carries a checksum). `sum`, given where the sender gives one,
  // receives the checksum the sender sent by the time the transfer completes; the
  // receiver checks the block against it.
  virtual void receive(Transfers& set, BlockKind kind, RegionId into, std::size_t offset, int node,
                       std::size_t bytes, uint64_t seq, BlockChecksum* sum) = 0;

  // The largest message a block is sent in: a block goes as consecutive chunks of
  // this many bytes (the last one shorter), each a send of its own, and the receiver
  // posts a receive per chunk (IncomingBlocks), so it can use the first chunks while
  // later ones are in flight. 0: one message per block.
  virtual std::size_t chunk_bytes() const = 0;

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

// Calls f(at, bytes) for each chunk of a block of `bytes` bytes sent in chunks of
// `chunk` bytes (InterNode::chunk_bytes(); 0: the whole block), `at` from the
// block's start; nothing for an empty block.
template <class F>
void for_each_chunk(std::size_t bytes, std::size_t chunk, F&& f) {
  const std::size_t step = chunk == 0 ? bytes : chunk;
  for (std::size_t at = 0; at < bytes; at += step) f(at, bytes - at < step ? bytes - at : step);
}

// Byte offset, in a receive buffer of blocks of `block_bytes` per remote node, of
// the block that node `from` writes on node `to` (own node skipped).
inline std::size_t block_offset(int from, int to, std::size_t block_bytes) {
  return static_cast<std::size_t>(from < to ? from : from - 1) * block_bytes;
}

}  // namespace epcomm::detail
