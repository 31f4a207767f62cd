// SPDX-License-Identifier: MIT
#include "transport/verbs/rc_queue_pair.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "util/check.hpp"

namespace epcomm::detail {
namespace {

// Transport timing. Local ACK timeout 4.096 us * 2^14 = 67 ms, 7 retries: a peer
// that stopped answering surfaces as IBV_WC_RETRY_EXC_ERR within about half a
// second. A receiver without a receive entry answers "receiver not ready" (RNR);
// the sender waits min_rnr_timer 31 (491 ms) and retries, 6 times: a receiver gets
// ~3 s to poll again. Users size recv_depth so that a correct run never sees RNR;
// it then means a stuck peer, or a queue pair in error on soft-RoCE (rxe answers
// RNR there, where hardware stays silent), and becomes IBV_WC_RNR_RETRY_EXC_ERR
// rather than a hang (rnr_retry 7 would retry forever).
constexpr uint8_t kAckTimeout = 14, kRetryCount = 7, kRnrRetry = 6, kMinRnrTimer = 31;
constexpr uint8_t kHopLimit = 64;

}  // namespace

RcQueuePair::RcQueuePair(const VerbsDevice& device, ibv_cq* cq, uint32_t send_depth, uint32_t recv_depth, int peer)
    : device_(device), psn_(std::random_device{}() & 0xffffff), peer_(peer) {
  ibv_qp_init_attr init{};
  init.send_cq = cq;
  init.recv_cq = cq;
  init.qp_type = IBV_QPT_RC;
  init.cap.max_send_wr = send_depth;
  init.cap.max_recv_wr = recv_depth;
  init.cap.max_send_sge = 1;
  init.cap.max_recv_sge = 1;
  qp_ = ibv_create_qp(device.pd(), &init);
  EPCOMM_REQUIRE(qp_ != nullptr, kSystem,
                 "ibv_create_qp (RC, " << send_depth << " send / " << recv_depth << " receive entries) to rank "
                                       << peer << " on " << device.name() << " failed: " << std::strerror(errno));
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_INIT;
  attr.pkey_index = 0;
  attr.port_num = static_cast<uint8_t>(device.port());
  attr.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
  try {
    modify(attr, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS, "INIT");
  } catch (...) {
    ibv_destroy_qp(qp_);
    throw;
  }
}

RcQueuePair::~RcQueuePair() { ibv_destroy_qp(qp_); }

QpEndpoint RcQueuePair::endpoint() const {
  const PortAddress& a = device_.address();
  QpEndpoint e{};
  e.qpn = qp_->qp_num;
  e.psn = psn_;
  e.lid = a.lid;
  e.global = a.gid_index >= 0 ? 1 : 0;
  e.mtu = static_cast<uint8_t>(a.mtu);
  std::memcpy(e.gid, a.gid.data(), sizeof e.gid);
  return e;
}

void RcQueuePair::connect(const QpEndpoint& remote) {
  const PortAddress& local = device_.address();
  ibv_qp_attr rtr{};
  rtr.qp_state = IBV_QPS_RTR;
  rtr.path_mtu = static_cast<ibv_mtu>(std::min<int>(local.mtu, remote.mtu));
  rtr.dest_qp_num = remote.qpn;
  rtr.rq_psn = remote.psn;
  rtr.max_dest_rd_atomic = 1;
  rtr.min_rnr_timer = kMinRnrTimer;
  rtr.ah_attr.port_num = static_cast<uint8_t>(device_.port());
  rtr.ah_attr.dlid = remote.lid;
  if (remote.global && local.gid_index >= 0) {
    rtr.ah_attr.is_global = 1;
    std::memcpy(rtr.ah_attr.grh.dgid.raw, remote.gid, sizeof remote.gid);
    rtr.ah_attr.grh.sgid_index = static_cast<uint8_t>(local.gid_index);
    rtr.ah_attr.grh.hop_limit = kHopLimit;
  }
  modify(rtr,
         IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
             IBV_QP_MIN_RNR_TIMER,
         "RTR");
  ibv_qp_attr rts{};
  rts.qp_state = IBV_QPS_RTS;
  rts.timeout = kAckTimeout;
  rts.retry_cnt = kRetryCount;
  rts.rnr_retry = kRnrRetry;
  rts.sq_psn = psn_;
  rts.max_rd_atomic = 1;
  modify(rts,
         IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC,
         "RTS");
}

void RcQueuePair::to_error() {
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_ERR;
  modify(attr, IBV_QP_STATE, "ERROR");
}

void RcQueuePair::modify(ibv_qp_attr& attr, int mask, const char* state) {
  const int rc = ibv_modify_qp(qp_, &attr, mask);
  EPCOMM_REQUIRE(rc == 0, kSystem,
                 "ibv_modify_qp to " << state << " for the queue pair to rank " << peer_ << " on " << device_.name()
                                     << " failed: " << std::strerror(rc));
}

}  // namespace epcomm::detail
