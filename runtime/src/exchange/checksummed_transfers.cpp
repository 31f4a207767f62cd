// SPDX-License-Identifier: MIT
#include "exchange/checksummed_transfers.hpp"

#include "util/check.hpp"
#include "util/crc32c.hpp"

namespace epcomm::detail {

void verify_block(const BlockChecksum& sent, const std::byte* data, std::size_t bytes, const char* what, uint64_t seq,
                  int sender) {
  const BlockChecksum got = block_checksum(data, bytes);
  EPCOMM_REQUIRE(got == sent, kDataCorrupted,
                 "the " << what << " of operation " << seq << " from rank " << sender << " (" << bytes
                        << " bytes) arrived corrupted: it has CRC32C " << std::hex << got.crc << ", rank " << std::dec
                        << sender << " sent " << std::hex << sent.crc);
}

void ChecksummedTransfers::send(std::byte* data, std::size_t bytes, int peer, int tag, MPI_Comm comm, Block block,
                                bool flip_one_bit) {
  BlockChecksum& sum = checksums_.emplace_back(block_checksum(data, bytes));
  if (flip_one_bit && bytes > 0) data[bytes / 2] ^= std::byte{0x10};
  MPI_Request r;
  EPCOMM_MPI(MPI_Isend(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm, &r));
  data_.add(r, peer, PeerRequests::Kind::kSend);
  EPCOMM_MPI(MPI_Isend(&sum.crc, 1, MPI_UINT32_T, peer, tag, comm, &r));
  sums_.add(r, peer, PeerRequests::Kind::kSend);
  entries_.push_back({nullptr, bytes, block});
}

void ChecksummedTransfers::receive(std::byte* data, std::size_t bytes, int peer, int tag, MPI_Comm comm,
                                   Block block) {
  BlockChecksum& sum = checksums_.emplace_back();
  MPI_Request r;
  EPCOMM_MPI(MPI_Irecv(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm, &r));
  data_.add(r, peer, PeerRequests::Kind::kRecv);
  EPCOMM_MPI(MPI_Irecv(&sum.crc, 1, MPI_UINT32_T, peer, tag, comm, &r));
  sums_.add(r, peer, PeerRequests::Kind::kRecv);
  entries_.push_back({data, bytes, block});
}

const std::vector<int>& ChecksummedTransfers::test_some() {
  completed_.clear();
  for (int i : data_.test_some()) entries_[i].data_done = true;
  for (int i : sums_.test_some()) entries_[i].sum_done = true;
  for (int i = 0; i < static_cast<int>(entries_.size()); ++i) {
    Entry& e = entries_[i];
    if (!e.data_done || !e.sum_done) continue;
    e.data_done = false;  // reported once
    if (e.data != nullptr) verify_block(checksums_[i], e.data, e.bytes, e.block.what, e.block.seq, data_.peer(i));
    completed_.push_back(i);
  }
  return completed_;
}

bool ChecksummedTransfers::abandon() {
  const bool data = data_.abandon();
  return sums_.abandon() && data;
}

}  // namespace epcomm::detail
