// SPDX-License-Identifier: MIT
#include "low_latency/mpi_proxy.hpp"

#include <algorithm>
#include <chrono>

#include "util/check.hpp"
#include "util/log.hpp"

namespace epcomm::detail {

MpiProxy::MpiProxy(MPI_Comm comm, int tag_base, std::vector<int> remote, Buffers dispatch, Buffers combine,
                   std::vector<ProxyRing*> rings, ProxyArrivals& sink, double timeout_s)
    : comm_(comm),
      tag_base_(tag_base),
      remote_(std::move(remote)),
      dispatch_(dispatch),
      combine_(combine),
      rings_(std::move(rings)),
      timeout_s_(timeout_s),
      sink_(sink),
      receives_(2 * remote_.size(), MPI_REQUEST_NULL),
      sends_(4 * remote_.size(), MPI_REQUEST_NULL),
      done_(4 * remote_.size()),
      statuses_(4 * remote_.size()) {
  for (std::size_t slot = 0; slot < receives_.size(); ++slot) post_receive(static_cast<int>(slot));
}

MpiProxy::~MpiProxy() {
  for (MPI_Request& r : receives_) {
    if (r == MPI_REQUEST_NULL) continue;
    MPI_Cancel(&r);
    MPI_Wait(&r, MPI_STATUS_IGNORE);
  }
  for (MPI_Request& r : sends_) {
    if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
  }
}

int MpiProxy::tag_base(uint64_t id) {
  void* tag_ub = nullptr;
  int has_ub = 0;
  EPCOMM_MPI(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &has_ub));
  const int bases = has_ub ? std::max(1, *static_cast<int*>(tag_ub) / 2) : 1;
  return static_cast<int>(id % static_cast<uint64_t>(bases)) * 2;
}

void MpiProxy::post_receive(int slot) {
  const int n = static_cast<int>(remote_.size());
  const int kind = slot / n, index = slot % n;
  const Buffers& b = buffers(kind);
  EPCOMM_MPI(MPI_Irecv(b.landing + b.message_bytes * index, static_cast<int>(b.message_bytes), MPI_BYTE,
                       remote_[index], tag_base_ + kind, comm_, &receives_[slot]));
}

std::byte* MpiProxy::staging(ProxyKind kind, int index, uint64_t seq) const {
  const Buffers& b = buffers(static_cast<int>(kind));
  return b.staging + b.message_bytes * (static_cast<std::size_t>(index) * b.copies + seq % b.copies);
}

std::size_t MpiProxy::send_slot(int kind, int index, uint64_t seq) const {
  return (static_cast<std::size_t>(kind) * remote_.size() + index) * 2 + seq % buffers(kind).copies;
}

void MpiProxy::finish_send(std::size_t slot, int peer) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  while (sends_[slot] != MPI_REQUEST_NULL) {
    int done = 0;
    EPCOMM_MPI(MPI_Test(&sends_[slot], &done, MPI_STATUS_IGNORE));
    if (done == 0 && std::chrono::steady_clock::now() > until) {
      EPCOMM_FAIL(kTimeout, "the low-latency proxy's send to rank "
                                << peer << " of two rounds before is still pending (its staging is needed again)");
    }
  }
}

bool MpiProxy::poll() {
  std::lock_guard<std::mutex> lk(mu_);
  return poll_locked();
}

bool MpiProxy::try_poll() {
  std::unique_lock<std::mutex> lk(mu_, std::try_to_lock);
  return lk.owns_lock() && poll_locked();
}

bool MpiProxy::poll_locked() {
  const int n = static_cast<int>(remote_.size());
  bool moved = false;
  ProxyCommand c;
  for (ProxyRing* ring : rings_) {
    while (ring->pop(c)) {
      int index = 0;
      while (remote_[index] != c.peer) ++index;
      const std::size_t slot = send_slot(static_cast<int>(c.kind), index, c.seq);
      finish_send(slot, c.peer);
      EPCOMM_MPI(MPI_Isend(staging(c.kind, index, c.seq), static_cast<int>(c.bytes), MPI_BYTE, c.peer,
                           tag_base_ + static_cast<int>(c.kind), comm_, &sends_[slot]));
      moved = true;
    }
  }
  int count = 0;
  EPCOMM_MPI(MPI_Testsome(static_cast<int>(receives_.size()), receives_.data(), &count, done_.data(),
                          statuses_.data()));
  for (int i = 0; count != MPI_UNDEFINED && i < count; ++i) {
    const int slot = done_[i];
    const int kind = slot / n, index = slot % n;
    const Buffers& b = buffers(kind);
    int bytes = 0;
    EPCOMM_MPI(MPI_Get_count(&statuses_[i], MPI_BYTE, &bytes));
    sink_.arrived(static_cast<ProxyKind>(kind), remote_[index], b.landing + b.message_bytes * index,
                  static_cast<std::size_t>(bytes));
    post_receive(slot);
    moved = true;
  }
  EPCOMM_MPI(MPI_Testsome(static_cast<int>(sends_.size()), sends_.data(), &count, done_.data(), MPI_STATUSES_IGNORE));
  if (count != MPI_UNDEFINED && count > 0) moved = true;
  return moved;
}

bool MpiProxy::staging_free(ProxyKind kind, int index) {
  std::lock_guard<std::mutex> lk(mu_);
  const std::size_t slot = send_slot(static_cast<int>(kind), index, 0);
  return sends_[slot] == MPI_REQUEST_NULL && sends_[slot + 1] == MPI_REQUEST_NULL;
}

bool MpiProxy::commands_pending() {
  std::lock_guard<std::mutex> lk(mu_);
  for (ProxyRing* ring : rings_) {
    if (!ring->empty()) return true;
  }
  return false;
}

bool MpiProxy::sends_pending() {
  std::lock_guard<std::mutex> lk(mu_);
  for (MPI_Request r : sends_) {
    if (r != MPI_REQUEST_NULL) return true;
  }
  return false;
}

std::string MpiProxy::pending_sends() {
  std::lock_guard<std::mutex> lk(mu_);
  std::string out;
  for (std::size_t slot = 0; slot < sends_.size(); ++slot) {
    if (sends_[slot] == MPI_REQUEST_NULL) continue;
    const std::size_t pair = slot / 2;  // kind * remote + index
    out += (out.empty() ? "" : ", ") + std::to_string(remote_[pair % remote_.size()]) +
           (pair < remote_.size() ? " (dispatch send)" : " (combine send)");
  }
  return out;
}

}  // namespace epcomm::detail
