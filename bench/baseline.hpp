// SPDX-License-Identifier: MIT
// The baseline epcomm is compared with: what common MoE frameworks do. One copy of
// a token per (token, expert) pair goes to the rank owning the expert through
// MPI_Alltoallv, and comes back the same way; the source sums weight * row in FP32.
// There is no node awareness: a token chosen by k experts on one remote node
// crosses the network k times.
#pragma once

#include <epcomm/types.hpp>

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace epcomm_bench {

// Where a received row came from, for the check.
struct RowSource {
  int32_t token;
  float weight;
};

// Bytes one dispatch + combine moved to other ranks, split by whether the peer is
// on another (emulated) node.
struct BaselineTraffic {
  int64_t internode_bytes = 0;
  int64_t intranode_bytes = 0;
};

class BaselineExchange {
 public:
  // comm: the epcomm group's communicator, so expert e lives on rank
  // e / (num_experts / size) exactly as in epcomm. wire: the row element type
  // (BF16 for the timed baseline).
  BaselineExchange(MPI_Comm comm, int num_experts, int hidden, epcomm::DType wire);
  ~BaselineExchange();
  BaselineExchange(const BaselineExchange&) = delete;
  BaselineExchange& operator=(const BaselineExchange&) = delete;

  // Sorts this rank's (token, expert) pairs by expert, packs one row of x per pair,
  // exchanges per-expert counts (MPI_Alltoall) and rows (MPI_Alltoallv).
  // x: [tokens, hidden] of the wire type. Entries of -1 in topk_idx send nothing.
  void dispatch(const void* x, const int32_t* topk_idx, int tokens, int topk);

  // Received rows, grouped by source rank, then local expert, then source token.
  const void* recv_rows() const { return recv_rows_.data(); }
  int64_t num_recv_rows() const { return recv_total_; }
  std::size_t row_bytes() const { return row_bytes_; }
  // Segment of rows from source rank `src` for local expert `local_expert`.
  int64_t recv_offset(int src, int local_expert) const;
  int recv_count(int src, int local_expert) const;
  int experts_per_rank() const { return experts_per_rank_; }
  epcomm::DType wire() const { return wire_; }
  int size() const { return size_; }

  // Sends expert_out (laid out like recv_rows()) back to the sources, which write
  // out[t] = sum over t's pairs of weight * row, in FP32. out: [tokens, hidden].
  void combine(const void* expert_out, const float* topk_weights, float* out);

  // Token and weight of every received row (same order as recv_rows()), sent with
  // the last dispatch's counts. For the check only; not part of the timed exchange.
  std::vector<RowSource> exchange_sources(const float* topk_weights) const;

  // Traffic of the last dispatch and its combine, as seen by this rank's sends.
  BaselineTraffic traffic(int ranks_per_node) const;

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 0;
  int experts_per_rank_ = 0;
  int hidden_ = 0;
  epcomm::DType wire_;
  std::size_t row_bytes_ = 0;
  MPI_Datatype row_type_ = MPI_DATATYPE_NULL;  // one row as a single MPI element

  int tokens_ = 0;
  int topk_ = 0;
  // Buffers live across iterations, so only the first dispatch allocates.
  std::vector<int32_t> pack_pairs_;   // token * topk + k of each packed row, by expert
  std::vector<int> expert_send_;      // [num_experts] pairs per expert
  std::vector<int> cursor_;           // [num_experts] counting-sort scratch
  std::vector<int> expert_recv_;      // [size][experts_per_rank] rows per source, expert
  std::vector<int> send_counts_, send_displs_, recv_counts_, recv_displs_;  // in rows
  int64_t recv_total_ = 0;
  std::vector<std::byte> send_rows_;
  std::vector<std::byte> recv_rows_;
};

}  // namespace epcomm_bench
