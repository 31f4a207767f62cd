// SPDX-License-Identifier: MIT
// RDMA writes with immediate between the ranks of an MPI communicator, over one
// reliable-connected queue pair per peer: the inter-node transport that replaces
// MPI_Isend/MPI_Irecv of contiguous per-peer regions.
//
// Use:
//   VerbsTransport t(comm);                       // opens the port, no collective
//   int rx = t.register_region(recv, bytes);      // every buffer, once, same order on
//   int tx = t.register_region(send, bytes);      //   every rank (indices name them)
//   t.connect();                                  // collective over comm
//   t.write(peer, tx, at, rx, their_offset, n, encode_immediate(seq, kind, part), id);
//   t.poll(completions);                          // non-blocking
//
// A receive completion {peer, imm} means every byte of that write (and of every
// earlier write from that peer) is in place: RC executes a queue pair's writes in
// order, and the immediate rides on the last chunk. The receiver therefore needs no
// receive buffers, only zero-length receive entries, which poll() replenishes.
//
// Not thread-safe: one thread (the engine, under its lock) drives a transport.
// After poll() throws, the transport is unusable; destroy it.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "transport/verbs/memory_region.hpp"
#include "transport/verbs/rc_queue_pair.hpp"
#include "transport/verbs/verbs_device.hpp"
#include "transport/verbs/write_plan.hpp"

namespace epcomm::detail {

struct Completion {
  enum class Kind { kWrite, kReceive };
  Kind kind;
  int peer;           // rank in the transport's communicator
  uint64_t wr_id;     // kWrite: the id passed to write(); the write is acknowledged
  uint32_t imm;       // kReceive: the immediate as passed to the sender's write()
  uint32_t byte_len;  // kReceive: bytes of the chunk that carried the immediate
                      //   (the whole write unless it exceeded max_message_size())
};

class VerbsTransport {
 public:
  struct Options {
    uint32_t send_depth = 128;  // send-queue entries per peer; more writes wait in software
    // Receive entries per peer: writes the peer may have in flight before it must
    // poll. Beyond that the sender is told "not ready" and retries for ~3 s, then
    // fails (IBV_WC_RNR_RETRY_EXC_ERR): size it to the protocol's bound.
    uint32_t recv_depth = 128;
    // How messages name each peer (e.g. its rank in a larger group); empty: by its
    // rank in the transport's communicator.
    std::vector<int> peer_labels;
  };

  VerbsTransport(MPI_Comm comm, Options options);
  explicit VerbsTransport(MPI_Comm comm) : VerbsTransport(comm, Options{}) {}
  ~VerbsTransport();
  VerbsTransport(const VerbsTransport&) = delete;
  VerbsTransport& operator=(const VerbsTransport&) = delete;

  // Registers [addr, addr + length) for local use and for peers' writes; returns its
  // index. Only before connect(), which publishes every region to every peer.
  int register_region(void* addr, std::size_t length, MemorySpace space = MemorySpace::kHost);
  // Collective over the communicator: exchanges endpoints and region tables,
  // connects the queue pairs, posts receives, and checks with one zero-byte write
  // each way that every peer is reachable within timeout_s. Returns once every rank
  // can be written to; if any rank failed, every rank throws (the failed one its own
  // reason, the others naming it).
  void connect(double timeout_s = 10.0);
  // The immediate of connect()'s reachability writes (sequence 0xffff, kind 15,
  // part 4095 in encode_immediate's terms: callers keep that kind for it). connect()
  // consumes every one of them before it returns.
  static constexpr uint32_t kProbeImmediate = 0xffffffffu;

  // RDMA write with immediate of `length` bytes at `local_offset` of local region
  // `local_region` to `remote_offset` of the peer's region `remote_region`. Never
  // blocks: beyond the send queue's depth, chunks wait in software and poll()
  // posts them. Completes with Completion{kWrite, peer, wr_id} once acknowledged.
  void write(int peer, int local_region, uint64_t local_offset, int remote_region, uint64_t remote_offset,
             uint64_t length, uint32_t imm, uint64_t wr_id);
  // The same to an explicitly given destination (tests aim a bad key with it).
  void write(int peer, int local_region, uint64_t local_offset, const RemoteRegion& remote, uint64_t remote_offset,
             uint64_t length, uint32_t imm, uint64_t wr_id);
  // A plain RDMA write: no immediate, so the peer sees no completion; its bytes are
  // in place once a later write with immediate to the same peer arrives (RC order).
  // Completes here like write().
  void write_without_immediate(int peer, int local_region, uint64_t local_offset, int remote_region,
                               uint64_t remote_offset, uint64_t length, uint64_t wr_id);
  // Appends the completions available now to `out` and returns how many. Throws
  // Error naming the peer, the verb and the work-completion status on failure.
  int poll(std::vector<Completion>& out);

  // Moves the queue pair to `peer` to the error state; its flushed work is not
  // reported. The peer's later writes fail on its side (retry exceeded).
  void fail_peer(int peer);

  // For diagnosis: writes not yet acknowledged, receives completed so far.
  int64_t writes_in_flight(int peer) const { return peers_[peer].writes_in_flight; }
  int64_t receives_completed(int peer) const { return peers_[peer].receives; }
  // "ranks 1 (3 writes unacknowledged), 2 (2 of 5 receives)": peers with writes in
  // flight, and peers with fewer receives than expected_receives[peer] (cumulative
  // counts, as receives_completed; empty = no expectations).
  std::string outstanding(std::span<const int64_t> expected_receives = {}) const;

  const RemoteRegion& remote_region(int peer, int index) const;
  const VerbsDevice& device() const { return device_; }
  uint32_t max_message_size() const { return device_.address().max_msg_size; }
  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  // One chunk waiting for a send-queue entry.
  struct PendingChunk {
    WriteChunk chunk;
    const std::byte* local_base;
    uint32_t lkey, rkey, imm;
    uint64_t wr_id;
    bool with_imm;  // the last chunk carries imm
  };
  void enqueue(int peer, int local_region, uint64_t local_offset, const RemoteRegion& remote, uint64_t remote_offset,
               uint64_t length, std::optional<uint32_t> imm, uint64_t wr_id);
  // A posted send entry, in queue order: RC completes them in that order.
  struct PostedChunk {
    uint64_t wr_id;
    bool last;
  };
  struct Peer {
    std::unique_ptr<RcQueuePair> qp;
    std::vector<RemoteRegion> regions;
    std::deque<PendingChunk> backlog;
    std::deque<PostedChunk> posted;
    int64_t writes_in_flight = 0;
    int64_t receives = 0;
    bool failed_here = false;  // fail_peer(): flushed completions are expected
  };

  void post_backlog(int peer);
  void post_receive(int peer);
  void agree_or_throw(const std::string& failure, const char* step);
  void probe_peers(double timeout_s);
  [[noreturn]] void fail_completion(const ibv_wc& wc, int peer, bool receive) const;
  Peer& checked_peer(int peer, const char* what);
  int label(int peer) const { return options_.peer_labels.empty() ? peer : options_.peer_labels[peer]; }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  Options options_;
  VerbsDevice device_;
  ibv_cq* cq_ = nullptr;
  std::vector<Region> regions_;
  std::vector<Peer> peers_;
  bool connected_ = false;
  std::vector<WriteChunk> plan_scratch_;
};

}  // namespace epcomm::detail
