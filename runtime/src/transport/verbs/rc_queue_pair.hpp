// SPDX-License-Identifier: MIT
// One reliable-connected queue pair to one peer, and its bring-up
// RESET -> INIT -> RTR -> RTS from the peer's endpoint (IB: by LID; RoCE: by GID
// with a global route header).
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>

#include "transport/verbs/verbs_device.hpp"

namespace epcomm::detail {

// What the peer needs to connect to one of our queue pairs: trivially copyable, so
// it travels through MPI as bytes.
struct QpEndpoint {
  uint32_t qpn;
  uint32_t psn;  // first packet sequence number, 24 bits
  uint16_t lid;
  uint8_t global;  // 1: address by gid
  uint8_t mtu;     // ibv_mtu of the port: the path uses the smaller of the two
  uint8_t gid[16];
};

class RcQueuePair {
 public:
  // `peer` only names the queue pair in error messages.
  RcQueuePair(const VerbsDevice& device, ibv_cq* cq, uint32_t send_depth, uint32_t recv_depth, int peer);
  ~RcQueuePair();
  RcQueuePair(const RcQueuePair&) = delete;
  RcQueuePair& operator=(const RcQueuePair&) = delete;

  QpEndpoint endpoint() const;
  void connect(const QpEndpoint& remote);
  // Moves the queue pair to ERROR: outstanding work is flushed and the peer's
  // writes are no longer acknowledged. For teardown tests and abandoning a peer.
  void to_error();

  ibv_qp* get() const { return qp_; }

 private:
  void modify(ibv_qp_attr& attr, int mask, const char* state);

  const VerbsDevice& device_;
  ibv_qp* qp_ = nullptr;
  uint32_t psn_;
  int peer_;
};

}  // namespace epcomm::detail
