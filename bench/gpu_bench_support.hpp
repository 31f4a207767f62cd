// SPDX-License-Identifier: MIT
// What the GPU benches share: a CUDA status turned into an exception naming the
// call, device memory owned by a scope, and the slowest rank's time of an
// iteration (the time a collective exchange takes is its slowest rank's).
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace epcomm_bench {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// At least one byte, so that an empty exchange still has a valid pointer.
struct DeviceBytes {
  void* p = nullptr;
  explicit DeviceBytes(std::size_t bytes) { cuda_ok(cudaMalloc(&p, bytes > 0 ? bytes : 1), "cudaMalloc"); }
  DeviceBytes(const void* host, std::size_t bytes) : DeviceBytes(bytes) {
    cuda_ok(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  ~DeviceBytes() { cudaFree(p); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
};

// The largest of every rank's `us` (collective over comm).
inline double slowest(MPI_Comm comm, double us) {
  double m = 0;
  MPI_Allreduce(&us, &m, 1, MPI_DOUBLE, MPI_MAX, comm);
  return m;
}

}  // namespace epcomm_bench
