// SPDX-License-Identifier: MIT
// NCCL moving the payload of an exchange, the GPU benches' baseline in the same
// run: ncclSend / ncclRecv groups carrying, to every other rank, one row per
// distinct token it receives (the deduplicated per-rank exchange a framework
// would write with NCCL) or one per (token, expert) pair (the per-expert one).
// Built where CMake finds NCCL (EPCOMM_BENCH_NCCL).
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace epcomm_bench {

// Rows each rank receives from this one, from its routing (topk_idx, tokens x
// topk, -1 for no expert; experts spread evenly over the ranks).
struct RowsTo {
  std::vector<std::size_t> tokens;  // distinct tokens per destination rank
  std::vector<std::size_t> pairs;   // (token, expert) pairs per destination rank
};
RowsTo rows_to_ranks(const int32_t* topk_idx, int tokens, int topk, int experts, int ranks);

class NcclBaseline {
 public:
  // Whether NCCL can run here: it refuses two ranks on one GPU, and ranks of a host
  // take GPU (rank within the host) mod (its GPU count). Collective over comm.
  static bool possible(MPI_Comm comm, int rank_within_host, int gpus_on_host);

  explicit NcclBaseline(MPI_Comm comm);  // collective over comm
  ~NcclBaseline();
  NcclBaseline(const NcclBaseline&) = delete;
  NcclBaseline& operator=(const NcclBaseline&) = delete;

  // Median over iters (after warmup) of the slowest rank's µs, CUDA events on s,
  // of one exchange of rows[d] * row_bytes bytes to each rank d. Collective.
  double exchange_us(cudaStream_t s, const std::vector<std::size_t>& rows, std::size_t row_bytes, int iters,
                     int warmup);

 private:
  struct Comm;
  MPI_Comm mpi_;
  std::unique_ptr<Comm> comm_;
};

}  // namespace epcomm_bench
