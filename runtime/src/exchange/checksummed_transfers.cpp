// SPDX-License-Identifier: MIT
#include "exchange/checksummed_transfers.hpp"

#include "util/check.hpp"

namespace epcomm::detail {

void ChecksummedTransfers::add_sum(MPI_Request r, int peer, PeerRequests::Kind kind) {
  sums_.add(r, peer, kind);
  sum_of_.push_back(static_cast<int>(entries_.size()) - 1);
}

void ChecksummedTransfers::send(std::byte* data, std::size_t bytes, int peer, int tag, MPI_Comm comm,
                                const BlockChecksum* sum) {
  MPI_Request r;
  EPCOMM_MPI(MPI_Isend(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm, &r));
  data_.add(r, peer, PeerRequests::Kind::kSend);
  entries_.push_back({false, sum == nullptr});
  if (sum == nullptr) return;
  BlockChecksum& kept = sent_sums_.emplace_back(*sum);
  EPCOMM_MPI(MPI_Isend(&kept.crc, 1, MPI_UINT32_T, peer, tag, comm, &r));
  add_sum(r, peer, PeerRequests::Kind::kSend);
}

void ChecksummedTransfers::receive(std::byte* data, std::size_t bytes, int peer, int tag, MPI_Comm comm,
                                   BlockChecksum* sum) {
  MPI_Request r;
  EPCOMM_MPI(MPI_Irecv(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm, &r));
  data_.add(r, peer, PeerRequests::Kind::kRecv);
  entries_.push_back({false, sum == nullptr});
  if (sum == nullptr) return;
  EPCOMM_MPI(MPI_Irecv(&sum->crc, 1, MPI_UINT32_T, peer, tag, comm, &r));
  add_sum(r, peer, PeerRequests::Kind::kRecv);
}

const std::vector<int>& ChecksummedTransfers::test_some() {
  completed_.clear();
  for (int i : data_.test_some()) entries_[i].data_done = true;
  for (int i : sums_.test_some()) entries_[sum_of_[i]].sum_done = true;
  for (int i = 0; i < static_cast<int>(entries_.size()); ++i) {
    Entry& e = entries_[i];
    if (!e.data_done || !e.sum_done) continue;
    e.data_done = false;  // reported once
    completed_.push_back(i);
  }
  return completed_;
}

std::string ChecksummedTransfers::pending_peers() const {
  const std::string data = data_.pending_peers(), sums = sums_.pending_peers();
  return data.empty() || sums.empty() ? data + sums : data + ", " + sums;
}

bool ChecksummedTransfers::abandon() {
  const bool data = data_.abandon();
  return sums_.abandon() && data;
}

}  // namespace epcomm::detail
