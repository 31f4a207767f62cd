// SPDX-License-Identifier: MIT
// The proxy of the low-latency exchange across nodes: it pops the rings' commands
// (one ring on the host path; on the device path one per kind, which GPU kernels
// push) and sends each staged message to its rank with MPI_Isend, keeps one receive per
// (rank on another node, kind) posted into a landing buffer of the largest
// message, and hands every arrival to the exchange, which unpacks the rows into its
// slots and raises the arrival words its receiver waits on.
//
// Why not the exchange's inter-node tier (exchange/internode.hpp): that tier moves
// blocks whose size both sides know ahead (the normal path exchanges counts
// first), only between rail peers. Here the receiver knows only a maximum (no count
// exchange) and any rank may send any rank; MPI accepts a message shorter than the
// posted receive, a fixed-size one-sided write would not.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <mutex>
#include <string>
#include <vector>

#include "low_latency/proxy_ring.hpp"

namespace epcomm::detail {

class ProxyArrivals {
 public:
  virtual ~ProxyArrivals() = default;
  // A whole message of `bytes` from `peer`, valid for the duration of the call.
  virtual void arrived(ProxyKind kind, int peer, const std::byte* message, std::size_t bytes) = 0;
};

class MpiProxy {
 public:
  struct Buffers {
    std::byte* staging;     // a message per remote rank, message_bytes apart
    std::byte* landing;
    std::size_t message_bytes;
    // Staging messages per remote rank, by the round: 2 where the next round's
    // sender (a GPU kernel) cannot wait for the last round's send to complete.
    int copies = 1;
  };
  // remote: the epcomm ranks on other nodes, in order (index i of a buffer is
  // remote[i]). Posts the receives.
  MpiProxy(MPI_Comm comm, int tag_base, std::vector<int> remote, Buffers dispatch, Buffers combine,
           std::vector<ProxyRing*> rings, ProxyArrivals& sink, double timeout_s);
  // Tags of the proxy's two message kinds, from the exchange's id: a pooled
  // communicator's stale messages from an earlier exchange cannot match.
  static int tag_base(uint64_t exchange_id);
  // Withdraws the posted receives. A send still pending (a peer that stopped
  // receiving) is left to MPI: then sends_pending() was true and the staging
  // memory must outlive the process.
  ~MpiProxy();
  MpiProxy(const MpiProxy&) = delete;
  MpiProxy& operator=(const MpiProxy&) = delete;

  // Posts what the ring holds, completes sends, hands arrivals to the sink.
  // Thread-safe; true if anything moved. Throws Error(kSystem) on an MPI error.
  bool poll();
  // poll() unless another thread is polling (then false at once): a waiting
  // caller never waits for a progress thread the scheduler took off its core.
  bool try_poll();
  // Whether `kind`'s staging message of remote index i may be written again.
  bool staging_free(ProxyKind kind, int index);
  bool sends_pending();
  bool commands_pending();
  // The staging message of remote index i for round `seq`.
  std::byte* staging(ProxyKind kind, int index, uint64_t seq = 0) const;
  // "3 (dispatch send), 5 (combine send)": what still waits on MPI, for timeouts.
  std::string pending_sends();

 private:
  void post_receive(int slot);  // slot = kind * remote + index
  // sends_[send_slot(...)]: one request per (kind, remote index, staging copy).
  std::size_t send_slot(int kind, int index, uint64_t seq) const;
  // Before a staging copy is sent again: its send of two rounds before was
  // received (the round protocol orders it), so MPI completes it at once; if not
  // within timeout_s, Error(kTimeout).
  void finish_send(std::size_t slot, int peer);
  bool poll_locked();
  const Buffers& buffers(int kind) const { return kind == 0 ? dispatch_ : combine_; }

  std::mutex mu_;
  MPI_Comm comm_;
  int tag_base_;
  std::vector<int> remote_;
  Buffers dispatch_, combine_;
  std::vector<ProxyRing*> rings_;
  double timeout_s_;
  ProxyArrivals& sink_;
  std::vector<MPI_Request> receives_;  // [kind][remote index]
  std::vector<MPI_Request> sends_;     // [kind][remote index][copy]
  std::vector<int> done_;
  std::vector<MPI_Status> statuses_;
};

}  // namespace epcomm::detail
