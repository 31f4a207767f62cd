// SPDX-License-Identifier: MIT
#include "low_latency/mpi_proxy.hpp"

#include "util/check.hpp"
#include "util/log.hpp"

namespace epcomm::detail {

MpiProxy::MpiProxy(MPI_Comm comm, int tag_base, std::vector<int> remote, Buffers dispatch, Buffers combine,
                   ProxyRing& ring, ProxyArrivals& sink)
    : comm_(comm),
      tag_base_(tag_base),
      remote_(std::move(remote)),
      dispatch_(dispatch),
      combine_(combine),
      ring_(ring),
      sink_(sink),
      receives_(2 * remote_.size(), MPI_REQUEST_NULL),
      sends_(2 * remote_.size(), MPI_REQUEST_NULL),
      done_(2 * remote_.size()) {
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

void MpiProxy::post_receive(int slot) {
  const int n = static_cast<int>(remote_.size());
  const int kind = slot / n, index = slot % n;
  const Buffers& b = buffers(kind);
  EPCOMM_MPI(MPI_Irecv(b.landing + b.message_bytes * index, static_cast<int>(b.message_bytes), MPI_BYTE,
                       remote_[index], tag_base_ + kind, comm_, &receives_[slot]));
}

std::byte* MpiProxy::staging(ProxyKind kind, int index) const {
  const Buffers& b = buffers(static_cast<int>(kind));
  return b.staging + b.message_bytes * index;
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
  while (ring_.pop(c)) {
    int index = 0;
    while (remote_[index] != c.peer) ++index;
    const int slot = static_cast<int>(c.kind) * n + index;
    EPCOMM_MPI(MPI_Isend(staging(c.kind, index), static_cast<int>(c.bytes), MPI_BYTE, c.peer,
                         tag_base_ + static_cast<int>(c.kind), comm_, &sends_[slot]));
    moved = true;
  }
  int count = 0;
  EPCOMM_MPI(MPI_Testsome(static_cast<int>(receives_.size()), receives_.data(), &count, done_.data(),
                          MPI_STATUSES_IGNORE));
  for (int i = 0; count != MPI_UNDEFINED && i < count; ++i) {
    const int slot = done_[i];
    const int kind = slot / n, index = slot % n;
    const Buffers& b = buffers(kind);
    sink_.arrived(static_cast<ProxyKind>(kind), remote_[index], b.landing + b.message_bytes * index,
                  b.message_bytes);
    post_receive(slot);
    moved = true;
  }
  EPCOMM_MPI(MPI_Testsome(static_cast<int>(sends_.size()), sends_.data(), &count, done_.data(), MPI_STATUSES_IGNORE));
  if (count != MPI_UNDEFINED && count > 0) moved = true;
  return moved;
}

bool MpiProxy::staging_free(ProxyKind kind, int index) {
  std::lock_guard<std::mutex> lk(mu_);
  return sends_[static_cast<std::size_t>(kind) * remote_.size() + index] == MPI_REQUEST_NULL;
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
    out += (out.empty() ? "" : ", ") + std::to_string(remote_[slot % remote_.size()]) +
           (slot < remote_.size() ? " (dispatch send)" : " (combine send)");
  }
  return out;
}

}  // namespace epcomm::detail
