// SPDX-License-Identifier: MIT
#include "exchange/peer_requests.hpp"

#include <chrono>
#include <thread>

#include "util/check.hpp"

namespace epcomm::detail {

PeerRequests::~PeerRequests() { abandon(); }

void PeerRequests::add(MPI_Request request, int peer, Kind kind) {
  requests_.push_back(request);
  peers_.push_back(peer);
  kinds_.push_back(kind);
  ++pending_;
}

const std::vector<int>& PeerRequests::test_some() {
  newly_done_.clear();
  if (pending_ == 0) return newly_done_;
  completed_scratch_.resize(requests_.size());
  int count = 0;
  EPCOMM_MPI(MPI_Testsome(static_cast<int>(requests_.size()), requests_.data(), &count,
                          completed_scratch_.data(), MPI_STATUSES_IGNORE));
  if (count == MPI_UNDEFINED) count = 0;
  pending_ -= count;
  newly_done_.assign(completed_scratch_.begin(), completed_scratch_.begin() + count);
  return newly_done_;
}

std::string PeerRequests::pending_peers() const {
  std::string out;
  for (std::size_t i = 0; i < requests_.size(); ++i) {
    if (requests_[i] == MPI_REQUEST_NULL) continue;
    out += (out.empty() ? "" : ", ") + std::to_string(peers_[i]);
    out += kinds_[i] == Kind::kRecv ? " (receive)" : " (send)";
  }
  return out;
}

bool PeerRequests::abandon() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return true;
  constexpr auto kCancelGrace = std::chrono::milliseconds(200);
  bool released_all = true;
  for (std::size_t i = 0; i < requests_.size(); ++i) {
    if (requests_[i] == MPI_REQUEST_NULL) continue;
    if (kinds_[i] == Kind::kRecv) {
      MPI_Cancel(&requests_[i]);
      // An unmatched receive completes at once when cancelled; a matched one only
      // when its data has arrived, which may be never.
      const auto deadline = std::chrono::steady_clock::now() + kCancelGrace;
      int done = 0;
      while (MPI_Test(&requests_[i], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();
      }
      if (!done) {
        MPI_Request_free(&requests_[i]);
        released_all = false;
      }
    } else {
      MPI_Request_free(&requests_[i]);
    }
  }
  clear();
  return released_all;
}

void PeerRequests::clear() {
  requests_.clear();
  peers_.clear();
  kinds_.clear();
  pending_ = 0;
}

}  // namespace epcomm::detail
