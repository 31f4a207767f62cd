// SPDX-License-Identifier: MIT
#include "nccl_baseline.hpp"

#include <nccl.h>

#include <stdexcept>
#include <string>

#include "common/stats.hpp"
#include "gpu_bench_support.hpp"

namespace epcomm_bench {
namespace {

void nccl_ok(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string("NCCL baseline: ") + what + ": " + ncclGetErrorString(r));
}

}  // namespace

RowsTo rows_to_ranks(const int32_t* topk_idx, int tokens, int topk, int experts, int ranks) {
  const int per_rank = experts / ranks;
  RowsTo r{std::vector<std::size_t>(ranks, 0), std::vector<std::size_t>(ranks, 0)};
  std::vector<int> last_token(ranks, -1);
  for (int t = 0; t < tokens; ++t) {
    for (int k = 0; k < topk; ++k) {
      const int32_t e = topk_idx[static_cast<std::size_t>(t) * topk + k];
      if (e < 0) continue;
      const int d = e / per_rank;
      ++r.pairs[d];
      if (last_token[d] != t) {
        last_token[d] = t;
        ++r.tokens[d];
      }
    }
  }
  return r;
}

bool NcclBaseline::possible(MPI_Comm comm, int rank_within_host, int gpus_on_host) {
  int shared = rank_within_host >= gpus_on_host ? 1 : 0, any = 0;
  MPI_Allreduce(&shared, &any, 1, MPI_INT, MPI_MAX, comm);
  return any == 0;
}

struct NcclBaseline::Comm {
  ncclComm_t c = nullptr;
};

NcclBaseline::NcclBaseline(MPI_Comm comm) : mpi_(comm), comm_(std::make_unique<Comm>()) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  ncclUniqueId id;
  if (rank == 0) nccl_ok(ncclGetUniqueId(&id), "ncclGetUniqueId");
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm);
  nccl_ok(ncclCommInitRank(&comm_->c, size, id, rank), "ncclCommInitRank");
}

NcclBaseline::~NcclBaseline() { ncclCommDestroy(comm_->c); }

double NcclBaseline::exchange_us(cudaStream_t s, const std::vector<std::size_t>& rows, std::size_t row_bytes,
                                 int iters, int warmup) {
  const int P = static_cast<int>(rows.size());
  int me = 0;
  MPI_Comm_rank(mpi_, &me);
  std::vector<std::size_t> bytes_to(P), bytes_from(P);
  for (int d = 0; d < P; ++d) bytes_to[d] = rows[d] * row_bytes;
  MPI_Alltoall(bytes_to.data(), sizeof(std::size_t), MPI_BYTE, bytes_from.data(), sizeof(std::size_t), MPI_BYTE, mpi_);
  std::size_t send_total = 0, recv_total = 0;
  for (int d = 0; d < P; ++d) {
    send_total += bytes_to[d];
    recv_total += bytes_from[d];
  }
  DeviceBytes send(send_total), recv(recv_total);
  cudaEvent_t a, b;
  cuda_ok(cudaEventCreate(&a), "cudaEventCreate");
  cuda_ok(cudaEventCreate(&b), "cudaEventCreate");
  std::vector<double> times;
  for (int i = 0; i < warmup + iters; ++i) {
    MPI_Barrier(mpi_);
    cuda_ok(cudaEventRecord(a, s), "cudaEventRecord");
    nccl_ok(ncclGroupStart(), "ncclGroupStart");
    std::size_t so = 0, ro = 0;
    for (int d = 0; d < P; ++d) {
      if (d != me && bytes_to[d] > 0) {
        nccl_ok(ncclSend(static_cast<char*>(send.p) + so, bytes_to[d], ncclUint8, d, comm_->c, s), "ncclSend");
      }
      if (d != me && bytes_from[d] > 0) {
        nccl_ok(ncclRecv(static_cast<char*>(recv.p) + ro, bytes_from[d], ncclUint8, d, comm_->c, s), "ncclRecv");
      }
      so += bytes_to[d];
      ro += bytes_from[d];
    }
    nccl_ok(ncclGroupEnd(), "ncclGroupEnd");
    cuda_ok(cudaEventRecord(b, s), "cudaEventRecord");
    cuda_ok(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    cuda_ok(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    const double us = slowest(mpi_, ms * 1000.0);
    if (i >= warmup) times.push_back(us);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return spread_of(times).p50;
}

}  // namespace epcomm_bench
