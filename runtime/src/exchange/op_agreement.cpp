// SPDX-License-Identifier: MIT
#include "exchange/op_agreement.hpp"

#include <memory>
#include <sstream>

#include "util/check.hpp"

namespace epcomm::detail {

std::string OpHeader::describe() const {
  std::ostringstream os;
  if (kind == kDispatch) {
    os << "dispatch " << seq;
    if (layout_of != 0) os << " on the layout of dispatch " << layout_of;
  } else if (kind == kCombine) {
    os << "combine " << seq << " of dispatch " << shape;
  } else {
    os << "operation " << seq << " of unknown kind " << kind;
  }
  return os.str();
}

OpAgreement::OpAgreement(MPI_Comm comm, int tag, int rank, int size)
    : comm_(comm),
      tag_(tag),
      rank_(rank),
      size_(size),
      incoming_(size),
      receives_(size, MPI_REQUEST_NULL),
      early_(size) {
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    EPCOMM_MPI(MPI_Irecv(&incoming_[p], sizeof(OpHeader), MPI_BYTE, p, tag_, comm_, &receives_[p]));
  }
}

OpAgreement::~OpAgreement() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (MPI_Request& r : receives_) {
    if (r == MPI_REQUEST_NULL) continue;
    MPI_Cancel(&r);
    MPI_Wait(&r, MPI_STATUS_IGNORE);
  }
  for (auto& s : sent_) {
    for (MPI_Request& r : s->requests) {
      if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
    }
  }
}

void OpAgreement::announce(const OpHeader& mine) {
  mine_[mine.seq] = mine;
  auto& sent = sent_.emplace_back(std::make_unique<Sent>());
  sent->header = mine;
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    MPI_Request r;
    EPCOMM_MPI(MPI_Isend(&sent->header, sizeof(OpHeader), MPI_BYTE, p, tag_, comm_, &r));
    sent->requests.push_back(r);
  }
}

std::optional<std::string> OpAgreement::compare(int peer, const OpHeader& theirs) {
  auto it = mine_.find(theirs.seq);
  if (it == mine_.end()) {
    early_[peer][theirs.seq] = theirs;  // compared when this rank begins it
    return std::nullopt;
  }
  if (!(it->second == theirs)) {
    std::ostringstream os;
    os << "rank " << peer << " began " << theirs.describe() << " while this rank (" << rank_ << ") began "
       << it->second.describe() << ": every rank must begin the same dispatches and combines in the same order";
    return os.str();
  }
  if (++matched_[theirs.seq] == size_ - 1) {
    mine_.erase(it);
    matched_.erase(theirs.seq);
  }
  return std::nullopt;
}

std::optional<std::string> OpAgreement::poll() {
  // Peers' headers that came before this rank began their operation.
  for (int p = 0; p < size_; ++p) {
    auto& early = early_[p];
    for (auto it = early.begin(); it != early.end() && mine_.count(it->first);) {
      const OpHeader theirs = it->second;
      it = early.erase(it);
      if (auto bad = compare(p, theirs)) return bad;
    }
  }
  // One MPI_Testsome per round over every peer's receive, repeated while headers
  // keep arriving (a peer may be several operations ahead).
  for (;;) {
    int count = 0;
    arrived_.resize(size_);
    EPCOMM_MPI(MPI_Testsome(size_, receives_.data(), &count, arrived_.data(), MPI_STATUSES_IGNORE));
    if (count == MPI_UNDEFINED || count == 0) break;
    for (int i = 0; i < count; ++i) {
      const int p = arrived_[i];
      const OpHeader theirs = incoming_[p];
      EPCOMM_MPI(MPI_Irecv(&incoming_[p], sizeof(OpHeader), MPI_BYTE, p, tag_, comm_, &receives_[p]));
      if (auto bad = compare(p, theirs)) return bad;
    }
  }
  while (!sent_.empty()) {
    int done = 0;
    auto& reqs = sent_.front()->requests;
    EPCOMM_MPI(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE));
    if (!done) break;
    sent_.erase(sent_.begin());
  }
  return std::nullopt;
}

}  // namespace epcomm::detail
