// SPDX-License-Identifier: MIT
#include "baseline.hpp"

#include "bf16.hpp"
#include "mpi_check.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>

namespace epcomm_bench {
namespace {

// Exclusive prefix sum, for MPI_Alltoallv displacements.
void prefix(const std::vector<int>& counts, std::vector<int>& displs) {
  displs.resize(counts.size());
  std::exclusive_scan(counts.begin(), counts.end(), displs.begin(), 0);
}

}  // namespace

BaselineExchange::BaselineExchange(MPI_Comm comm, int num_experts, int hidden,
                                   epcomm::DType wire)
    : comm_(comm), hidden_(hidden), wire_(wire) {
  mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  if (num_experts % size_ != 0) {
    throw std::invalid_argument("baseline: " + std::to_string(num_experts) +
                                " experts are not divisible by " + std::to_string(size_) +
                                " ranks");
  }
  experts_per_rank_ = num_experts / size_;
  row_bytes_ = static_cast<std::size_t>(hidden) * epcomm::dtype_size(wire);
  // Counting rows instead of bytes keeps MPI's int counts far from overflow.
  mpi_check(MPI_Type_contiguous(static_cast<int>(row_bytes_), MPI_BYTE, &row_type_),
            "MPI_Type_contiguous");
  mpi_check(MPI_Type_commit(&row_type_), "MPI_Type_commit");
  expert_send_.resize(num_experts);
  cursor_.resize(num_experts);
  expert_recv_.resize(num_experts);
  send_counts_.resize(size_);
  recv_counts_.resize(size_);
}

BaselineExchange::~BaselineExchange() { MPI_Type_free(&row_type_); }

void BaselineExchange::dispatch(const void* x, const int32_t* topk_idx, int tokens, int topk) {
  tokens_ = tokens;
  topk_ = topk;
  const int pairs = tokens * topk;

  // Counting sort of the pairs by expert; scanning tokens in order keeps each
  // expert's rows sorted by token. Experts are contiguous per rank, so this is also
  // grouped by destination rank.
  std::fill(expert_send_.begin(), expert_send_.end(), 0);
  for (int p = 0; p < pairs; ++p) {
    if (topk_idx[p] >= 0) ++expert_send_[topk_idx[p]];
  }
  std::exclusive_scan(expert_send_.begin(), expert_send_.end(), cursor_.begin(), 0);
  const int packed = std::accumulate(expert_send_.begin(), expert_send_.end(), 0);
  pack_pairs_.resize(packed);
  for (int p = 0; p < pairs; ++p) {
    if (topk_idx[p] >= 0) pack_pairs_[cursor_[topk_idx[p]]++] = p;
  }

  send_rows_.resize(static_cast<std::size_t>(packed) * row_bytes_);
  const auto* src = static_cast<const std::byte*>(x);
  for (int i = 0; i < packed; ++i) {
    std::memcpy(send_rows_.data() + i * row_bytes_, src + (pack_pairs_[i] / topk) * row_bytes_,
                row_bytes_);
  }

  for (int r = 0; r < size_; ++r) {
    send_counts_[r] = std::accumulate(expert_send_.begin() + r * experts_per_rank_,
                                      expert_send_.begin() + (r + 1) * experts_per_rank_, 0);
  }
  prefix(send_counts_, send_displs_);

  // Per-expert counts tell each receiver how many rows to expect and which local
  // expert each one is for, so no per-row ids travel with the payload.
  mpi_check(MPI_Alltoall(expert_send_.data(), experts_per_rank_, MPI_INT, expert_recv_.data(),
                         experts_per_rank_, MPI_INT, comm_),
            "MPI_Alltoall(expert counts)");
  for (int r = 0; r < size_; ++r) {
    recv_counts_[r] = std::accumulate(expert_recv_.begin() + r * experts_per_rank_,
                                      expert_recv_.begin() + (r + 1) * experts_per_rank_, 0);
  }
  prefix(recv_counts_, recv_displs_);
  recv_total_ = std::accumulate(recv_counts_.begin(), recv_counts_.end(), int64_t{0});
  recv_rows_.resize(static_cast<std::size_t>(recv_total_) * row_bytes_);

  mpi_check(MPI_Alltoallv(send_rows_.data(), send_counts_.data(), send_displs_.data(), row_type_,
                          recv_rows_.data(), recv_counts_.data(), recv_displs_.data(), row_type_,
                          comm_),
            "MPI_Alltoallv(dispatch rows)");
}

int64_t BaselineExchange::recv_offset(int src, int local_expert) const {
  const auto first = expert_recv_.begin() + src * experts_per_rank_;
  return recv_displs_[src] + std::accumulate(first, first + local_expert, int64_t{0});
}

int BaselineExchange::recv_count(int src, int local_expert) const {
  return expert_recv_[src * experts_per_rank_ + local_expert];
}

void BaselineExchange::combine(const void* expert_out, const float* topk_weights, float* out) {
  // The returned rows land where the packed rows were: same pairs, same order.
  mpi_check(MPI_Alltoallv(expert_out, recv_counts_.data(), recv_displs_.data(), row_type_,
                          send_rows_.data(), send_counts_.data(), send_displs_.data(), row_type_,
                          comm_),
            "MPI_Alltoallv(combine rows)");

  std::fill(out, out + static_cast<std::size_t>(tokens_) * hidden_, 0.0f);
  for (std::size_t i = 0; i < pack_pairs_.size(); ++i) {
    const int p = pack_pairs_[i];
    const float w = topk_weights[p];
    float* acc = out + static_cast<std::size_t>(p / topk_) * hidden_;
    const std::byte* row = send_rows_.data() + i * row_bytes_;
    if (wire_ == epcomm::DType::kBF16) {
      const auto* v = reinterpret_cast<const uint16_t*>(row);
      for (int h = 0; h < hidden_; ++h) acc[h] += w * from_bf16(v[h]);
    } else {
      const auto* v = reinterpret_cast<const float*>(row);
      for (int h = 0; h < hidden_; ++h) acc[h] += w * v[h];
    }
  }
}

std::vector<RowSource> BaselineExchange::exchange_sources(const float* topk_weights) const {
  std::vector<RowSource> packed(pack_pairs_.size());
  for (std::size_t i = 0; i < packed.size(); ++i) {
    packed[i] = {pack_pairs_[i] / topk_, topk_weights[pack_pairs_[i]]};
  }
  MPI_Datatype source_type;
  mpi_check(MPI_Type_contiguous(sizeof(RowSource), MPI_BYTE, &source_type), "MPI_Type_contiguous");
  mpi_check(MPI_Type_commit(&source_type), "MPI_Type_commit");
  std::vector<RowSource> received(recv_total_);
  const int rc = MPI_Alltoallv(packed.data(), send_counts_.data(), send_displs_.data(),
                               source_type, received.data(), recv_counts_.data(),
                               recv_displs_.data(), source_type, comm_);
  MPI_Type_free(&source_type);
  mpi_check(rc, "MPI_Alltoallv(row sources)");
  return received;
}

BaselineTraffic BaselineExchange::traffic(int ranks_per_node) const {
  BaselineTraffic t;
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;  // a rank's rows to itself are a local copy
    // Every row goes there in dispatch and comes back in combine.
    const int64_t bytes = 2 * static_cast<int64_t>(send_counts_[r]) * row_bytes_;
    // Group ranks are node-major: rank r is on node r / ranks_per_node.
    if (r / ranks_per_node != rank_ / ranks_per_node) {
      t.internode_bytes += bytes;
    } else {
      t.intranode_bytes += bytes;
    }
  }
  return t;
}

}  // namespace epcomm_bench
