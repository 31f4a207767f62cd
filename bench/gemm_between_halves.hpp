// SPDX-License-Identifier: MIT
// The low-latency mode's promise that between its halves (dispatch_send ...
// dispatch_recv, combine_send ... combine_recv) the exchange holds no SM, measured
// the way a decode step uses it: a BF16 GEMM of an expert layer's shape (cuBLAS) on
// the caller's stream between the two calls, against the same GEMM alone.
//
// Each iteration runs the GEMM alone, then a whole dispatch and combine with the
// GEMM between each pair of halves, so both see the same machine; the times are
// CUDA events around the GEMM, the slowest rank's per iteration, medians.
//
// Then the two-micro-batch case the SM budget (LowLatencyConfig::gpu_sm_budget) is
// for: the GEMM on a second stream while a whole dispatch and combine run on the
// exchange's, both timed with their own events: how much the exchange's kernels
// slow the other micro-batch's GEMM, and it them, at the exchange's budget.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>

#include <functional>

namespace epcomm_bench {

struct GemmShape {
  int m = 0, n = 0, k = 0;  // C[m, n] = A[m, k] * B[k, n], BF16 in, FP32 accumulate
};

struct GemmBetweenHalves {
  double alone_us = 0;       // the GEMM alone
  double in_dispatch_us = 0;  // between dispatch_send and dispatch_recv
  double in_combine_us = 0;   // between combine_send and combine_recv
  double beside_us = 0;       // on a second stream, beside a whole dispatch and combine
  double exchange_beside_us = 0;  // that dispatch and combine, beside the GEMM
};

struct LowLatencyHalves {
  std::function<void()> dispatch_send, dispatch_recv, combine_send, combine_recv;
};

// Collective over comm (barriers, reductions).
GemmBetweenHalves measure_gemm_between_halves(MPI_Comm comm, cudaStream_t stream, GemmShape shape,
                                              const LowLatencyHalves& halves, int warmup, int iters);

}  // namespace epcomm_bench
