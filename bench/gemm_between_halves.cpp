// SPDX-License-Identifier: MIT
#include "gemm_between_halves.hpp"

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common/stats.hpp"
#include "gpu_bench_support.hpp"

namespace epcomm_bench {
namespace {

void cublas_ok(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("gemm between halves: ") + what + ": cuBLAS status " + std::to_string(s));
  }
}

struct Blas {
  cublasHandle_t h = nullptr;
  explicit Blas(cudaStream_t s) {
    cublas_ok(cublasCreate(&h), "cublasCreate");
    cublas_ok(cublasSetStream(h, s), "cublasSetStream");
  }
  ~Blas() { cublasDestroy(h); }
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
};

}  // namespace

GemmBetweenHalves measure_gemm_between_halves(MPI_Comm comm, cudaStream_t stream, GemmShape g,
                                              const LowLatencyHalves& halves, int warmup, int iters) {
  const std::size_t bf16 = sizeof(__nv_bfloat16);
  DeviceBytes a(static_cast<std::size_t>(g.m) * g.k * bf16), b(static_cast<std::size_t>(g.k) * g.n * bf16),
      c(static_cast<std::size_t>(g.m) * g.n * bf16);
  // Small finite values (0x3c3c is about 0.0115): the GEMM's speed, not its result.
  cuda_ok(cudaMemsetAsync(a.p, 0x3c, static_cast<std::size_t>(g.m) * g.k * bf16, stream), "cudaMemsetAsync");
  cuda_ok(cudaMemsetAsync(b.p, 0x3c, static_cast<std::size_t>(g.k) * g.n * bf16, stream), "cudaMemsetAsync");
  Blas blas(stream);
  cudaStream_t side = nullptr;
  cuda_ok(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), "cudaStreamCreate");
  const float one = 1.0f, zero = 0.0f;
  // Row-major C = A * B is column-major C^T = B^T * A^T.
  const auto gemm_on = [&](cudaStream_t s) {
    cublas_ok(cublasSetStream(blas.h, s), "cublasSetStream");
    cublas_ok(cublasGemmEx(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, g.n, g.m, g.k, &one, b.p, CUDA_R_16BF, g.n, a.p,
                           CUDA_R_16BF, g.k, &zero, c.p, CUDA_R_16BF, g.n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx");
  };
  const auto gemm = [&] { gemm_on(stream); };
  cudaEvent_t ev[10];
  for (cudaEvent_t& e : ev) cuda_ok(cudaEventCreate(&e), "cudaEventCreate");
  const auto elapsed_us = [&](int from) {
    float ms = 0;
    cuda_ok(cudaEventElapsedTime(&ms, ev[from], ev[from + 1]), "cudaEventElapsedTime");
    return slowest(comm, ms * 1e3);
  };
  std::vector<double> alone, in_dispatch, in_combine, beside, exchange_beside;
  for (int i = 0; i < warmup + iters; ++i) {
    MPI_Barrier(comm);
    cuda_ok(cudaEventRecord(ev[0], stream), "cudaEventRecord");
    gemm();
    cuda_ok(cudaEventRecord(ev[1], stream), "cudaEventRecord");
    cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    MPI_Barrier(comm);
    halves.dispatch_send();
    cuda_ok(cudaEventRecord(ev[2], stream), "cudaEventRecord");
    gemm();
    cuda_ok(cudaEventRecord(ev[3], stream), "cudaEventRecord");
    halves.dispatch_recv();
    halves.combine_send();
    cuda_ok(cudaEventRecord(ev[4], stream), "cudaEventRecord");
    gemm();
    cuda_ok(cudaEventRecord(ev[5], stream), "cudaEventRecord");
    halves.combine_recv();
    cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    // The other micro-batch's GEMM beside a whole dispatch and combine.
    MPI_Barrier(comm);
    cuda_ok(cudaEventRecord(ev[6], side), "cudaEventRecord");
    gemm_on(side);
    cuda_ok(cudaEventRecord(ev[7], side), "cudaEventRecord");
    cuda_ok(cudaEventRecord(ev[8], stream), "cudaEventRecord");
    halves.dispatch_send();
    halves.dispatch_recv();
    halves.combine_send();
    halves.combine_recv();
    cuda_ok(cudaEventRecord(ev[9], stream), "cudaEventRecord");
    cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    cuda_ok(cudaStreamSynchronize(side), "cudaStreamSynchronize");
    const double t_alone = elapsed_us(0), t_dispatch = elapsed_us(2), t_combine = elapsed_us(4);
    const double t_beside = elapsed_us(6), t_exchange = elapsed_us(8);
    if (i < warmup) continue;
    alone.push_back(t_alone);
    in_dispatch.push_back(t_dispatch);
    in_combine.push_back(t_combine);
    beside.push_back(t_beside);
    exchange_beside.push_back(t_exchange);
  }
  for (cudaEvent_t& e : ev) cudaEventDestroy(e);
  cudaStreamDestroy(side);
  return {spread_of(alone).p50, spread_of(in_dispatch).p50, spread_of(in_combine).p50, spread_of(beside).p50,
          spread_of(exchange_beside).p50};
}

}  // namespace epcomm_bench
